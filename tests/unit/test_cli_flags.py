"""``abode`` flags: ``ABODE_<FLAG>`` fills flags not given; flags win (DESIGN §4, §5)."""

from __future__ import annotations

import pytest

from abode.cluster.cli.__main__ import apply_environment, build_parser


def parse(argv: list[str], environ: dict[str, str] | None = None):
    return apply_environment(build_parser(), argv, environ or {})


def test_defaults():
    args = parse(["dev", "examples.counter"])
    assert (args.idle_timeout, args.max_queue, args.call_timeout, args.alarm_retry_base) == (
        30.0, 1000, 30.0, 2.0)


def test_environment_fills_flags_not_given_and_flags_win():
    env = {"ABODE_IDLE_TIMEOUT": "0.5", "ABODE_MAX_QUEUE": "7", "ABODE_ALARM_RETRY_BASE": "0.1"}
    args = parse(["dev", "app.py", "--max-queue=9"], env)
    assert args.idle_timeout == 0.5 and args.alarm_retry_base == 0.1
    assert args.max_queue == 9


def test_a_bad_environment_value_is_a_usage_error(capsys):
    with pytest.raises(SystemExit):
        parse(["dev", "app.py"], {"ABODE_MAX_QUEUE": "lots"})
    assert "ABODE_MAX_QUEUE" in capsys.readouterr().err
