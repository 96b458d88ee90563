"""``python -m bench [SCENARIO ...] [--seconds 10] [--clients 32]``.

Runs the named scenarios (all by default) one after another and exits non-zero if
any of their correctness checks failed. Add a scenario by writing a module with
``async def main(opts) -> bool`` and listing it in ``SCENARIOS``.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import platform
import sys

import uvloop

# name -> module; each module's ``main(opts)`` returns True when its checks pass.
SCENARIOS = {
    "http_counter": "bench.http_counter",
    "websockets": "bench.websockets",
    "replication": "bench.replication",
    # "cluster_counter": "bench.cluster_counter", (to come)
}


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description="Drive abode with load and check the results."
    )
    parser.add_argument("scenarios", nargs="*", metavar="SCENARIO",
                        help=f"which to run (default: all of {', '.join(SCENARIOS)})")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each load phase")
    parser.add_argument("--clients", type=int, default=32, help="concurrent clients")
    opts = parser.parse_args(argv)
    unknown = [name for name in opts.scenarios if name not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario {unknown[0]!r}; choose from {', '.join(SCENARIOS)}")
    if opts.seconds <= 0 or opts.clients <= 0:
        parser.error("--seconds and --clients must be positive")
    opts.scenarios = opts.scenarios or list(SCENARIOS)
    return opts


async def run(opts: argparse.Namespace) -> bool:
    print(f"abode bench: {os.cpu_count()} CPUs, Python {platform.python_version()}, "
          f"server and clients on this machine\n", flush=True)
    passed = True
    for name in opts.scenarios:
        module = importlib.import_module(SCENARIOS[name])
        passed &= await module.main(opts)
        print()
    print("PASS" if passed else "FAIL")
    return passed


def main(argv: list[str] | None = None) -> int:
    opts = parse(sys.argv[1:] if argv is None else argv)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return 0 if runner.run(run(opts)) else 1


if __name__ == "__main__":
    sys.exit(main())
