"""A CLI that explains itself (issue 10, item 5): --version, every flag's help with its
default and its ABODE_* variable, required arguments shown as required."""

from __future__ import annotations

import argparse
import importlib.metadata

import pytest

from abode.cluster.cli.__main__ import _subparsers, apply_environment, build_parser, env_name
from tests.cli.helpers import run_abode

COMMANDS = {p.prog.split()[-1]: p for p in _subparsers(build_parser())}


def test_version() -> None:
    result = run_abode("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"abode {importlib.metadata.version('abode')}"


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_flag_says_what_it_does_its_default_and_its_variable(command: str) -> None:
    parser = COMMANDS[command]
    text = " ".join(parser.format_help().split())  # unwrapped
    for action in parser._actions:
        if action.dest == "help":
            continue
        assert action.help, f"abode {command} {action.option_strings or action.dest}: no help"
        var = env_name(action)
        if action.dest in ("node_id", "dir"):
            assert var is None  # NODE of remove, DIR of init: no variable
            assert "(required)" in text
            continue
        assert var is not None and f"env {var})" in text, (command, action.dest)
        if action.required or not action.option_strings:
            assert f"(required; env {var})" in text, (command, action.dest)
        elif not isinstance(action, argparse._StoreTrueAction | argparse._StoreFalseAction):
            shown = ("none" if action.default is None else '""' if action.default == ""
                     else str(action.default))
            assert f"(default: {shown}; env {var})" in text, (command, action.dest)


@pytest.mark.parametrize("command", ["dev", "up"])
def test_app_is_required_unless_its_variable_is_set(command: str) -> None:
    usage = COMMANDS[command].format_usage()
    assert usage.rstrip().endswith(" APP") and "[APP]" not in usage
    result = run_abode(command)
    assert result.returncode == 2
    assert "the following arguments are required: APP" in result.stderr
    args = apply_environment(build_parser(), [command], {"ABODE_APP": "examples.counter"})
    assert args.app == "examples.counter"


def test_the_top_level_help_names_the_variables_and_log_level_default() -> None:
    result = run_abode("--help")
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    assert "ABODE_<FLAG>" in text and "env ABODE_LOG_LEVEL" in text
    for command in ("dev", "up", "node", "router", "status", "usage", "remove"):
        assert f" {command} " in text
