"""A seconds-long smoke of benchmarks/congestion.py: senders through a 20 Mbit/s
tbf bottleneck between network namespaces, with and without the window.

What must hold however loaded the machine is checked (delivery exactly once,
the link used, the window's run retransmitting less than the run without);
the benchmark itself reports the figures (docs/congestion.md). Needs root,
``ip`` and ``tc``; skipped otherwise, with the reason.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "benchmarks" / "congestion.py"


def _reason() -> str | None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("congestion_bench", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    reason: str | None = module.unavailable_reason()
    return reason


def test_senders_share_a_kernel_bottleneck_and_every_notify_arrives_once(tmp_path: Path) -> None:
    reason = _reason()
    if reason is not None:
        pytest.skip(reason)
    out = tmp_path / "congestion.json"
    proc = subprocess.run([sys.executable, str(BENCH), "--smoke", "--json", str(out)],
                          capture_output=True, text=True, timeout=240, check=False)
    assert proc.returncode == 0, proc.stderr
    on, off = json.loads(out.read_text())["runs"]
    assert on["congestion"] and not off["congestion"]
    for run in (on, off):
        assert run["exactly_once"] and run["delivered_twice"] == 0
        assert run["acked_not_delivered"] == 0 and run["timeouts"] == 0
        assert run["completed"] > 0
    assert on["goodput_share"] > 0.5  # (the benchmark's own bar is 85 %, on a quiet machine)
    assert on["jain"] > 0.8
    assert on["retransmitted_share"] < max(0.1, off["retransmitted_share"])
