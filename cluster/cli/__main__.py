"""``abode``: parse flags (then ``ABODE_*`` variables) into a frozen config and run.

This is the only module that reads ``os.environ``, configures logging, and owns
signal handling.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import logging
import os
import signal
import sys
import textwrap
from collections.abc import Sequence
from typing import Any

import uvloop

import abode
from abode.cluster.app import AppError
from abode.cluster.cli.upstate import DirInUse
from abode.cluster.cli.usage import HELP as USAGE_HELP
from abode.cluster.supervisor import SupervisedTaskEnded
from abode.node._runtime import RuntimeConfig
from abode.node._store import StoreLocked

log = logging.getLogger("abode")

MIB = 1024 * 1024


DESCRIPTION = """\
durable objects on your own machines.

Start with `abode dev APP` (one process, reloads on save), or `abode up APP` for a
local cluster; APP is a module path (examples.counter) or a file (path/app.py)."""

EPILOG = """\
Every flag is also read from ABODE_<FLAG> (--metrics-port: ABODE_METRICS_PORT), and
APP from ABODE_APP; a flag given on the command line wins. `abode COMMAND --help`
lists a command's flags, each with its default and its variable."""

LONG_RUNNING = frozenset({"dev", "up", "node", "router"})


class _Help(argparse.RawDescriptionHelpFormatter):
    """Help lines that end with the flag's default (or "required") and its variable."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.dest in ("help", "version") or isinstance(action, argparse._SubParsersAction) \
                or type(action).__name__ == "_ChoicesPseudoAction":  # a command's summary
            return text
        notes = []
        if action.required or (not action.option_strings and action.nargs is None):
            notes.append("required")
        elif action.option_strings and not isinstance(
                action, argparse._StoreTrueAction | argparse._StoreFalseAction):
            default = ("none" if action.default is None else '""' if action.default == ""
                       else str(action.default))
            notes.append(f"default: {default}".replace("%", "%%"))
        if (var := env_name(action)) is not None:
            notes.append(f"env {var}")
        return f"{text} ({'; '.join(notes)})" if text else f"({'; '.join(notes)})"


def env_name(action: argparse.Action) -> str | None:
    """The ``ABODE_*`` variable of a flag (and of the APP argument); None for others."""
    if action.dest in ("help", "version", "command", "node_id", "dir"):
        return None
    if not action.option_strings and action.dest != "app":
        return None
    return "ABODE_" + action.dest.upper()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="abode", description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=_Help)
    parser.add_argument("--version", action="version", version=f"abode {_version()}")
    parser.add_argument("--log-level", default=None, metavar="LEVEL",
                        help="DEBUG, INFO, WARNING or ERROR; none: INFO for dev, up, node "
                        "and router, WARNING for the commands that print a report")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help: str, **kwargs: Any) -> argparse.ArgumentParser:
        kwargs.setdefault("description", textwrap.fill(help[0].upper() + help[1:] + "."))
        return sub.add_parser(name, help=help, formatter_class=_Help, epilog=EPILOG, **kwargs)

    dev = command("dev", "one node and one router in one process, for writing apps; "
                  "reloads the app when one of its files changes")
    _app_argument(dev)
    dev.add_argument("--port", type=int, default=8787, help="HTTP port; 0: any free one")
    dev.add_argument("--host", default="127.0.0.1",
                     help="HTTP listen host; the metrics endpoint binds it too")
    dev.add_argument("--data", default=".abode", help="data directory (RocksDB in DATA/dev/db)")
    dev.add_argument("--metrics-port", type=int, default=None,
                     help="serve /metrics (node and router families) on this port; 0: any; "
                     "none: no endpoint")
    dev.add_argument("--storage-scan-interval", type=float, default=60.0,
                     help="seconds between walks that measure stored bytes per namespace")
    _runtime_flags(dev)
    dev.add_argument("--max-body", type=int, default=32 * MIB,
                     help="request body limit, bytes (past it: 413)")
    dev.add_argument("--no-reload", dest="reload", action="store_false",
                     help="serve the app as loaded at start, without watching its files "
                     "(ABODE_RELOAD=0 does the same)")
    _ready_flag(dev)

    up = command("up", "a local cluster: etcd, nodes and routers on loopback")
    _app_argument(up)
    up.add_argument("--nodes", type=int, default=3, help="storage nodes to start")
    up.add_argument("--routers", type=int, default=2, help="routers to start")
    up.add_argument("--replicas", type=int, default=1, help="copies of each object")
    up.add_argument("--port", type=int, default=8787,
                    help="first router's port, the next ones above it; 0: any free ones")
    up.add_argument("--data", default=".abode/up",
                    help="data, logs and run files of the cluster (one abode up per DATA)")
    up.add_argument("--idle-timeout", type=float, default=30.0,
                    help="seconds without events before an object is evicted")
    up.add_argument("--cluster", default="abode", help="prefix of every etcd key")

    node = command("node", "one storage node (for docker-compose, systemd)")
    node.add_argument("--app", required=True,
                      help="the app: module path (examples.counter) or file (path/app.py)")
    _etcd_flags(node)
    node.add_argument("--id", default="",
                      help="node id, stable across restarts; empty: the host name")
    node.add_argument("--listen", default="127.0.0.1:7070", help="gRPC listen HOST:PORT")
    node.add_argument("--advertise", default="",
                      help="HOST:PORT others reach this node at; empty: the listen address")
    node.add_argument("--data", default=".abode/nodes",
                      help="data directory (RocksDB in DATA/ID/db)")
    node.add_argument("--metrics-port", type=int, default=None,
                      help="serve /metrics and /usage on this port; 0: any; none: no endpoint")
    node.add_argument("--storage-scan-interval", type=float, default=60.0,
                      help="seconds between walks that measure stored bytes per namespace")
    node.add_argument("--replicas", type=int, default=1, help="copies of each object")
    node.add_argument("--weight", type=int, default=100, help="share of the ring (100 = normal)")
    node.add_argument("--etcd-give-up", type=float, default=60.0,
                      help="seconds etcd may stay unreachable before the node exits non-zero "
                      "(for its supervisor to restart it)")
    _runtime_flags(node)
    _ready_flag(node)

    router = command("router", "one edge router (for docker-compose, systemd); stateless")
    router.add_argument("--app", required=True,
                        help="the app: module path (examples.counter) or file (path/app.py)")
    _etcd_flags(router)
    router.add_argument("--port", type=int, default=8787, help="HTTP port; 0: any free one")
    router.add_argument("--host", default="127.0.0.1",
                        help="HTTP listen host; the metrics endpoint binds it too")
    router.add_argument("--metrics-port", type=int, default=None,
                        help="serve /metrics on this port; 0: any; none: no endpoint")
    router.add_argument("--max-body", type=int, default=32 * MIB,
                        help="request body limit, bytes (past it: 413)")
    router.add_argument("--call-timeout", type=float, default=30.0,
                        help="seconds a call may wait for its answer (past it: 504)")
    _ready_flag(router)

    status = command("status", "members, liveness, ownership, objects per node")
    _find_flags(status)

    usage = command("usage", "per-namespace requests, object GB-s, stored bytes",
                    description=USAGE_HELP)
    _find_flags(usage)
    usage.add_argument("--url", default="", help="metrics endpoint(s) to read instead "
                       "(abode dev --metrics-port), comma-separated")
    usage.add_argument("--since", default=None, help="1h, 30m, 2d or ISO 8601; "
                       "none: since each node started")
    usage.add_argument("--memory-mb", type=float, default=128.0,
                       help="memory billed per active object, for GB-s (Cloudflare: 128)")
    usage.add_argument("--json", action="store_true", help="machine-readable output")

    init = command("init", "write a starter project: an app, its tests, a pyproject, a README")
    init.add_argument("dir", metavar="DIR", help="the new project's folder (new or empty)")

    remove = command("remove", "decommission a node: hand off its data, then drop it")
    remove.add_argument("node_id", metavar="NODE", help="id of the node to remove")
    _find_flags(remove)
    return parser


def _version() -> str:
    try:
        return importlib.metadata.version("abode")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree, not installed
        return abode.__version__


def _app_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("app", metavar="APP",
                   help="the app: module path (examples.counter) or file (path/app.py)")


def _etcd_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--etcd", required=True, help="etcd endpoint(s): http://host:port[,...]")
    p.add_argument("--cluster", default="abode", help="prefix of every etcd key")
    p.add_argument("--lease-ttl", type=float, default=3.0, help="liveness lease, seconds")


def _find_flags(p: argparse.ArgumentParser) -> None:
    """A command that looks at a cluster: by default the local `abode up`'s."""
    p.add_argument("--etcd", default=None, help="etcd endpoint(s): http://host:port[,...]; "
                   "none: the one of the abode up running on --data")
    p.add_argument("--data", default=".abode/up",
                   help="data dir of the local abode up to find, when --etcd is not given")
    p.add_argument("--cluster", default=None, help="prefix of every etcd key; none: the "
                   "abode up's, or abode")


def _ready_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ready-file", default=None,
                   help="write the ports as JSON to this file once serving (for supervisors)")


def _runtime_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--idle-timeout", type=float, default=30.0,
                   help="seconds without events before an object is evicted")
    p.add_argument("--max-queue", type=int, default=1000,
                   help="mailbox bound per object (past it: 503 overloaded)")
    p.add_argument("--call-timeout", type=float, default=30.0,
                   help="seconds a call may wait for its answer (past it: 504)")
    p.add_argument("--max-active-objects", type=int, default=10_000,
                   help="objects in memory before idle ones are evicted, least recently "
                   "used first")
    p.add_argument("--alarm-retry-base", type=float, default=2.0,
                   help="seconds before a failed alarm's first retry (doubling)")


def apply_environment(parser: argparse.ArgumentParser, argv: Sequence[str],
                      environ: dict[str, str]) -> argparse.Namespace:
    """Parse ``argv``; a flag not given falls back to ``ABODE_<FLAG>``; flags win."""
    for sub in [parser, *_subparsers(parser)]:
        for action in sub._actions:
            key = env_name(action)
            if key is None or key not in environ:
                continue
            raw = environ[key]
            try:
                if isinstance(action, argparse._StoreTrueAction | argparse._StoreFalseAction):
                    action.default = raw.strip().lower() in ("1", "true", "yes", "on")
                else:
                    action.default = action.type(raw) if callable(action.type) else raw
            except (TypeError, ValueError):
                parser.error(f"{key}={raw!r} is not a valid value for {key[6:].lower()}")
            action.required = False
            if not action.option_strings:
                action.nargs = "?"  # APP: given by the variable, optional on the line
    return parser.parse_args(argv)


def _subparsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return list(action.choices.values())
    return []


def _runtime_config(args: argparse.Namespace) -> RuntimeConfig:
    return RuntimeConfig(
        idle_timeout=args.idle_timeout,
        max_queue=args.max_queue,
        call_timeout=args.call_timeout,
        max_active_objects=args.max_active_objects,
        alarm_first_retry=args.alarm_retry_base,
    )


async def _serve(args: argparse.Namespace) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    command = args.command
    if command == "dev":
        from abode.cluster.cli.dev import DevConfig, run_dev

        dev = DevConfig(
            app=args.app, port=args.port, host=args.host, data=args.data,
            runtime=_runtime_config(args), max_body=args.max_body, ready_file=args.ready_file,
            metrics_port=args.metrics_port, storage_scan_interval=args.storage_scan_interval,
        )
        if args.reload:
            from abode.cluster.cli.reload import run_reloading

            await run_reloading(dev, stop, run_dev)
        else:
            await run_dev(dev, stop)
    elif command == "up":
        from abode.cluster.cli.up import UpConfig, run_up

        return await run_up(UpConfig(
            app=args.app, nodes=args.nodes, routers=args.routers, replicas=args.replicas,
            port=args.port, data=args.data, idle_timeout=args.idle_timeout, cluster=args.cluster,
        ), stop)
    elif command == "node":
        from abode.cluster.cli.members import NodeProcessConfig, run_node

        await run_node(NodeProcessConfig(
            app=args.app, etcd=args.etcd, node_id=args.id, listen=args.listen,
            advertise=args.advertise, data=args.data, cluster=args.cluster, weight=args.weight,
            replicas=args.replicas, lease_ttl=args.lease_ttl, runtime=_runtime_config(args),
            metrics_port=args.metrics_port, ready_file=args.ready_file,
            storage_scan_interval=args.storage_scan_interval, etcd_give_up=args.etcd_give_up,
        ), stop)
    elif command == "router":
        from abode.cluster.cli.members import RouterProcessConfig, run_router
        from abode.router import RouterConfig

        await run_router(RouterProcessConfig(
            app=args.app, etcd=args.etcd, cluster=args.cluster,
            router=RouterConfig(args.host, args.port, args.max_body, args.call_timeout),
            lease_ttl=args.lease_ttl, metrics_port=args.metrics_port,
            ready_file=args.ready_file,
        ), stop)
    elif command == "status":
        from abode.cluster.cli.admin import status

        return await status(*_cluster_of(args))
    elif command == "usage":
        from abode.cluster.cli.usage import usage

        urls = [u for u in args.url.split(",") if u.strip()]
        etcd, cluster = _cluster_of(args) if args.etcd or not urls else (None, "abode")
        return await usage(
            etcd=etcd, cluster=cluster, since=args.since, memory_mb=args.memory_mb,
            urls=urls, as_json=args.json,
        )
    elif command == "remove":
        from abode.cluster.cli.admin import remove

        return await remove(args.node_id, *_cluster_of(args))
    return 0


def _cluster_of(args: argparse.Namespace) -> tuple[str, str]:
    """(etcd, cluster) of an admin command: its flags, else the local `abode up`'s."""
    if args.etcd:
        return args.etcd, args.cluster or "abode"
    from abode.cluster.cli.upstate import find_cluster

    etcd, cluster = find_cluster(args.data)
    return etcd, args.cluster or cluster


def _configure_logging(args: argparse.Namespace) -> None:
    level = (args.log_level or ("INFO" if args.command in LONG_RUNNING else "WARNING")).upper()
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr,
    )
    logging.getLogger("watchfiles").setLevel(logging.WARNING)  # abode dev says what changed
    if args.command == "router" and level != "DEBUG":
        # A line per request suits `abode dev`; a production router shows them at DEBUG.
        logging.getLogger("abode.access").setLevel(logging.WARNING)


def _init(folder: str) -> int:
    from abode.cluster.cli.init import InitError, init_project, module_name

    try:
        files = init_project(folder)
    except (InitError, OSError) as exc:
        print(f"abode: {exc}", file=sys.stderr)
        return 1
    print(f"abode init: wrote {', '.join(f.name for f in files)} in {folder}\n\n"
          f"  cd {folder}\n  abode dev {module_name(folder)}.py    # serve it; reloads on save\n"
          "  python -m pytest           # its tests (pip install pytest)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = apply_environment(parser, argv, dict(os.environ))
    if args.command == "init":
        return _init(args.dir)
    _configure_logging(args)
    try:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(_serve(args))
    except (AppError, LookupError) as exc:
        # The app does not load; no cluster named and none found: as a usage error.
        print(f"abode: {exc}", file=sys.stderr)
        return 2
    except (OSError, StoreLocked, ValueError, DirInUse, SupervisedTaskEnded) as exc:
        # etcd unreachable, port taken, data dir locked or in use, bad endpoint, a task
        # of the process ended: one line, non-zero.
        print(f"abode: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
