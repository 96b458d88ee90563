"""Benchmarks: ``python -m bench`` (``make bench``).

Each scenario module owns its setup (which server, how many processes) and exposes
``async def main(opts) -> bool`` (True when its correctness checks pass); they are
listed in ``bench.__main__.SCENARIOS``. Shared pieces: ``bench.server`` starts
``abode dev`` as a child process, ``bench.load`` drives a server with concurrent
clients and reports throughput and latency.
"""
