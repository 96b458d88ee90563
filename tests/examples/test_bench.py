"""``python -m bench`` (``make bench``) runs end to end and its checks pass."""

from __future__ import annotations

import subprocess
import sys

from tests.harness import ROOT


def test_bench_runs_and_its_counter_check_passes():
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "http_counter", "--seconds", "1", "--clients", "4"],
        cwd=ROOT, capture_output=True, text=True, timeout=90,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    for line in ("PASS  hot:", "PASS  spread:", "req/s   p50"):
        assert line in out, out
    assert out.rstrip().endswith("PASS"), out


def test_bench_rejects_an_unknown_scenario():
    proc = subprocess.run([sys.executable, "-m", "bench", "nope"], cwd=ROOT,
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2 and "unknown scenario 'nope'" in proc.stderr
