"""Container health check for an abode process (the image's HEALTHCHECK).

Finds the ``abode`` process in the container, parses its command line and the
``ABODE_*`` variables it was started with through abode's own parser (so the check
probes exactly the ports the process serves), and then:

* ``abode router`` / ``abode dev``: ``GET /_abode/health`` must answer 200 (the
  router's app is loaded and it sees at least one live node);
* ``abode node``: the gRPC ``Info`` call must answer with a membership revision
  above 0, i.e. the node serves gRPC, has registered in etcd and follows membership.

Exit 0 when healthy, 1 with a one-line reason otherwise.
"""

from __future__ import annotations

import json
import os
import sys
import urllib.request
from pathlib import Path

COMMANDS = {"dev", "up", "node", "router", "status", "usage", "remove"}


def find_abode(pid: int | None = None) -> tuple[list[str], dict[str, str]]:
    """The argv (after the program) and environment of the abode process: ``pid``, or
    the first one found in this container."""
    procs = [Path(f"/proc/{pid}")] if pid is not None else sorted(
        Path("/proc").glob("[0-9]*"), key=lambda p: int(p.name))
    for proc in procs:
        try:
            argv = (proc / "cmdline").read_bytes().decode().split("\0")
            environ_raw = (proc / "environ").read_bytes().decode()
        except (OSError, UnicodeDecodeError):
            continue
        args = _abode_args(argv)
        if args is not None:
            environ = dict(e.split("=", 1) for e in environ_raw.split("\0") if "=" in e)
            return args, environ
    raise RuntimeError("no abode process found" + (f" at pid {pid}" if pid else ""))


def _abode_args(argv: list[str]) -> list[str] | None:
    if argv and argv[-1] == "":  # /proc/PID/cmdline ends with a NUL
        argv = argv[:-1]
    for i, arg in enumerate(argv):
        if os.path.basename(arg) == "abode":
            rest = argv[i + 1:]
        elif arg == "-m" and argv[i + 1:i + 2] in (["abode"], ["abode.cluster.cli"]):
            rest = argv[i + 2:]
        else:
            continue
        return rest if COMMANDS & set(rest) else None
    return None


def _local(host: str) -> str:
    return "127.0.0.1" if host in ("", "0.0.0.0", "::", "[::]") else host


def check_router(host: str, port: int) -> str:
    url = f"http://{_local(host)}:{port}/_abode/health"
    with urllib.request.urlopen(url, timeout=3) as resp:  # raises on 503
        body = json.loads(resp.read())
    return f"router healthy: {body}"


def check_node(listen: str) -> str:
    import grpc

    from abode.cluster.rpc.v1 import node_pb2 as pb
    from abode.cluster.rpc.v1 import node_pb2_grpc as pb_grpc

    host, _, port = listen.rpartition(":")
    with grpc.insecure_channel(f"{_local(host)}:{port}") as channel:
        info = pb_grpc.NodeStub(channel).Info(pb.InfoRequest(), timeout=3)
    if info.revision <= 0:
        raise RuntimeError(f"node {info.node_id} serves gRPC but has not joined membership yet")
    return (f"node {info.node_id} healthy: revision {info.revision}, "
            f"{info.active_objects} objects, {info.pending_ranges} ranges arriving")


def main(argv: list[str]) -> int:
    """``abode-healthcheck [PID]``: check the abode process ``PID`` (default: find it)."""
    from abode.cluster.cli.__main__ import apply_environment, build_parser

    try:
        abode_argv, environ = find_abode(int(argv[0]) if argv else None)
        args = apply_environment(build_parser(), abode_argv, environ)
        if args.command in ("router", "dev"):
            print(check_router(args.host, args.port))
        elif args.command == "node":
            print(check_node(args.listen))
        else:
            print(f"abode {args.command} has no health check")
        return 0
    except (Exception, SystemExit) as exc:
        print(f"unhealthy: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
