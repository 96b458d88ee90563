"""``abode``: parse flags (then ``ABODE_*`` variables) into a frozen config and run.

This is the only module that reads ``os.environ``, configures logging, and owns
signal handling.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Sequence

import uvloop

from cluster.app import AppError

log = logging.getLogger("abode")

MIB = 1024 * 1024


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="abode", description="durable objects on your own machines")
    parser.add_argument("--log-level", default="INFO")
    sub = parser.add_subparsers(dest="command", required=True)

    dev = sub.add_parser("dev", help="one node and one router in one process, for writing apps")
    dev.add_argument("app", help="module path (examples.counter) or file (path/app.py)")
    dev.add_argument("--port", type=int, default=8787)
    dev.add_argument("--host", default="127.0.0.1")
    dev.add_argument("--data", default=".abode")
    _runtime_flags(dev)
    dev.add_argument("--ready-file", default=None, help="write ports as JSON here once serving")
    return parser


def _runtime_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--idle-timeout", type=float, default=30.0,
                   help="seconds without events before an object is evicted")
    p.add_argument("--max-queue", type=int, default=1000, help="mailbox bound per object")
    p.add_argument("--max-body", type=int, default=32 * MIB, help="request body limit, bytes")
    p.add_argument("--call-timeout", type=float, default=30.0, help="seconds a call may wait")
    p.add_argument("--max-active-objects", type=int, default=10_000)
    p.add_argument("--alarm-retry-base", type=float, default=2.0,
                   help="seconds before a failed alarm's first retry (doubling)")


def apply_environment(parser: argparse.ArgumentParser, argv: Sequence[str],
                      environ: dict[str, str]) -> argparse.Namespace:
    """Parse ``argv``; a flag not given falls back to ``ABODE_<FLAG>``; flags win."""
    args = parser.parse_args(argv)
    sub = _subparser(parser, args.command)
    for action in sub._actions:
        if not action.option_strings or action.dest == "help":
            continue
        key = "ABODE_" + action.dest.upper()
        given = any(a == o or a.startswith(o + "=") for a in argv for o in action.option_strings)
        if key in environ and not given:
            raw = environ[key]
            try:
                value = action.type(raw) if callable(action.type) else raw
            except (TypeError, ValueError):
                parser.error(f"{key}={raw!r} is not a valid value for {action.option_strings[0]}")
            setattr(args, action.dest, value)
    return args


def _subparser(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices[name]  # type: ignore[no-any-return]
    raise KeyError(name)


async def _serve(args: argparse.Namespace) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if args.command == "dev":
        from cluster.cli.dev import DevConfig, run_dev

        cfg = DevConfig(
            app=args.app, port=args.port, host=args.host, data=args.data,
            idle_timeout=args.idle_timeout, max_queue=args.max_queue, max_body=args.max_body,
            call_timeout=args.call_timeout, max_active_objects=args.max_active_objects,
            alarm_retry_base=args.alarm_retry_base, ready_file=args.ready_file,
        )
        await run_dev(cfg, stop)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = apply_environment(parser, argv, dict(os.environ))
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(_serve(args))
    except AppError as exc:
        print(f"abode: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"abode: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
