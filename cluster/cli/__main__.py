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

from abode.cluster.app import AppError
from abode.cluster.cli.usage import HELP as USAGE_HELP
from abode.cluster.supervisor import SupervisedTaskEnded
from abode.node._runtime import RuntimeConfig
from abode.node._store import StoreLocked

log = logging.getLogger("abode")

MIB = 1024 * 1024


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="abode", description="durable objects on your own machines")
    parser.add_argument("--log-level", default="INFO")
    sub = parser.add_subparsers(dest="command", required=True)

    dev = sub.add_parser("dev", help="one node and one router in one process, for writing apps")
    dev.add_argument("app", nargs="?", help="module path (examples.counter) or file (path/app.py)")
    dev.add_argument("--port", type=int, default=8787)
    dev.add_argument("--host", default="127.0.0.1")
    dev.add_argument("--data", default=".abode")
    dev.add_argument("--metrics-port", type=int, default=None,
                     help="serve /metrics (node and router families) on this port; 0: any")
    dev.add_argument("--storage-scan-interval", type=float, default=60.0,
                     help="seconds between walks that measure stored bytes per namespace")
    _runtime_flags(dev)
    dev.add_argument("--max-body", type=int, default=32 * MIB, help="request body limit, bytes")
    _ready_flag(dev)

    up = sub.add_parser("up", help="a local cluster: etcd, nodes and routers on loopback")
    up.add_argument("app", nargs="?", help="module path (examples.counter) or file (path/app.py)")
    up.add_argument("--nodes", type=int, default=3)
    up.add_argument("--routers", type=int, default=2)
    up.add_argument("--replicas", type=int, default=1)
    up.add_argument("--port", type=int, default=8787, help="first router's port; the next ones above it")
    up.add_argument("--data", default=".abode/up")
    up.add_argument("--idle-timeout", type=float, default=30.0)
    up.add_argument("--cluster", default="abode", help="prefix of every etcd key")

    node = sub.add_parser("node", help="one storage node")
    node.add_argument("--app", required=True)
    _etcd_flags(node)
    node.add_argument("--id", default="", help="node id (default: host name); stable across restarts")
    node.add_argument("--listen", default="127.0.0.1:7070", help="gRPC listen HOST:PORT")
    node.add_argument("--advertise", default="", help="HOST:PORT others reach this node at")
    node.add_argument("--data", default=".abode/nodes")
    node.add_argument("--metrics-port", type=int, default=None)
    node.add_argument("--storage-scan-interval", type=float, default=60.0,
                      help="seconds between walks that measure stored bytes per namespace")
    node.add_argument("--replicas", type=int, default=1)
    node.add_argument("--weight", type=int, default=100, help="share of the ring (100 = normal)")
    node.add_argument("--etcd-give-up", type=float, default=60.0,
                      help="seconds etcd may stay unreachable before the node exits non-zero "
                      "(for its supervisor to restart it)")
    _runtime_flags(node)
    _ready_flag(node)

    router = sub.add_parser("router", help="one edge router")
    router.add_argument("--app", required=True)
    _etcd_flags(router)
    router.add_argument("--port", type=int, default=8787)
    router.add_argument("--host", default="127.0.0.1")
    router.add_argument("--metrics-port", type=int, default=None)
    router.add_argument("--max-body", type=int, default=32 * MIB, help="request body limit, bytes")
    router.add_argument("--call-timeout", type=float, default=30.0)
    _ready_flag(router)

    status = sub.add_parser("status", help="members, liveness, ownership, objects per node")
    _etcd_flags(status, lease=False)

    usage = sub.add_parser("usage", help="per-namespace requests, object GB-s, stored bytes",
                           description=USAGE_HELP,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    usage.add_argument("--etcd", default=None, help="a cluster: read every live node")
    usage.add_argument("--cluster", default="abode", help="prefix of every etcd key")
    usage.add_argument("--url", default="", help="metrics endpoint(s) to read instead "
                       "(abode dev --metrics-port), comma-separated")
    usage.add_argument("--since", default=None, help="1h, 30m, 2d or ISO 8601 "
                       "(default: since each node started)")
    usage.add_argument("--memory-mb", type=float, default=128.0,
                       help="memory billed per active object, for GB-s (Cloudflare: 128)")
    usage.add_argument("--json", action="store_true", help="machine-readable output")

    remove = sub.add_parser("remove", help="decommission a node: hand off its data, then drop it")
    remove.add_argument("node_id", metavar="NODE")
    _etcd_flags(remove, lease=False)
    return parser


def _etcd_flags(p: argparse.ArgumentParser, *, lease: bool = True) -> None:
    p.add_argument("--etcd", required=True, help="http://host:port[,http://host:port...]")
    p.add_argument("--cluster", default="abode", help="prefix of every etcd key")
    if lease:
        p.add_argument("--lease-ttl", type=float, default=3.0, help="liveness lease, seconds")


def _ready_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ready-file", default=None, help="write ports as JSON here once serving")


def _runtime_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--idle-timeout", type=float, default=30.0,
                   help="seconds without events before an object is evicted")
    p.add_argument("--max-queue", type=int, default=1000, help="mailbox bound per object")
    p.add_argument("--call-timeout", type=float, default=30.0, help="seconds a call may wait")
    p.add_argument("--max-active-objects", type=int, default=10_000)
    p.add_argument("--alarm-retry-base", type=float, default=2.0,
                   help="seconds before a failed alarm's first retry (doubling)")


def apply_environment(parser: argparse.ArgumentParser, argv: Sequence[str],
                      environ: dict[str, str]) -> argparse.Namespace:
    """Parse ``argv``; a flag not given falls back to ``ABODE_<FLAG>``; flags win."""
    for sub in [parser, *_subparsers(parser)]:
        for action in sub._actions:
            optional_positional = not action.option_strings and action.nargs == "?"
            if (not action.option_strings and not optional_positional) or action.dest == "help":
                continue
            key = "ABODE_" + action.dest.upper()
            if key not in environ:
                continue
            raw = environ[key]
            try:
                action.default = action.type(raw) if callable(action.type) else raw
            except (TypeError, ValueError):
                parser.error(f"{key}={raw!r} is not a valid value for {key[6:].lower()}")
            action.required = False
    args = parser.parse_args(argv)
    if getattr(args, "app", "") is None:
        parser.error("name the app: abode dev APP (or set ABODE_APP)")
    return args


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

        await run_dev(DevConfig(
            app=args.app, port=args.port, host=args.host, data=args.data,
            runtime=_runtime_config(args), max_body=args.max_body, ready_file=args.ready_file,
            metrics_port=args.metrics_port, storage_scan_interval=args.storage_scan_interval,
        ), stop)
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

        return await status(args.etcd, args.cluster)
    elif command == "usage":
        from abode.cluster.cli.usage import usage

        return await usage(
            etcd=args.etcd, cluster=args.cluster, since=args.since, memory_mb=args.memory_mb,
            urls=[u for u in args.url.split(",") if u.strip()], as_json=args.json,
        )
    elif command == "remove":
        from abode.cluster.cli.admin import remove

        return await remove(args.node_id, args.etcd, args.cluster)
    return 0


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
            return runner.run(_serve(args))
    except AppError as exc:
        print(f"abode: {exc}", file=sys.stderr)
        return 2
    except (OSError, StoreLocked, ValueError, SupervisedTaskEnded) as exc:
        # etcd unreachable, port taken, data dir locked, bad endpoint, a task of the
        # process ended: one line, non-zero.
        print(f"abode: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
