"""Smoke tests of the interop benchmarks: they run against the real peers and every
request is answered. No timing is asserted (timing belongs in the benchmarks)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.interop.peers import ROOT, binary

BENCH = ROOT / "benchmarks"


def run(script: str, tmp_path: Path, *args: str) -> Any:
    out_file = tmp_path / "out.json"
    out = subprocess.run([sys.executable, str(BENCH / script), *args, "--json", str(out_file)],
                         capture_output=True, text=True, timeout=180, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out_file.read_text())


def test_coap_bench_runs_both_clients_against_libcoap(tmp_path: Path) -> None:
    binary("coap-server-notls", "libcoap3-bin")
    result = run("coap_bench.py", tmp_path, "--rounds", "1", "--duration", "0.3",
                 "--inflight", "5")
    for client in ("aiodisp", "aiocoap"):
        assert result["rounds"][client][0]["done"] > 0
        assert result[client]["per_s"] > 0


def test_snmp_bench_gets_every_value_with_both_clients(tmp_path: Path) -> None:
    binary("snmpd", "snmpd")
    if importlib.util.find_spec("pysnmp") is None:
        pytest.skip("pysnmp is not installed (it is in the bench extra: pip install -e '.[bench]')")
    result = run("snmp_bench.py", tmp_path, "--rounds", "1", "--count", "20", "--inflight", "4")
    for client in ("aiodisp", "pysnmp"):
        assert result["rounds"][client][0]["ok"] == 20


def test_syslog_bench_delivers_every_line_with_each_sender(tmp_path: Path) -> None:
    result = run("syslog_bench.py", tmp_path, "--rounds", "1", "--count", "2000")
    for sender in ("aiodisp", "stdlib-emit", "stdlib-logger"):
        assert result[sender]["received_min"] == 1.0
