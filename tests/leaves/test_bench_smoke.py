"""Smoke tests of the benchmark harness and ``aiodisp bench``: they run, they answer
correctly, their output has the documented shape. No timing is asserted."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "benchmarks"


def _run(*argv: str, timeout: float = 90.0) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"), env.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, *argv], capture_output=True, text=True, timeout=timeout, env=env,
        cwd=ROOT, check=False,
    )


def _json(out: subprocess.CompletedProcess[str]) -> Any:
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout)


def _bench_wired() -> bool:
    out = _run("-m", "aiodisp", "--help", timeout=30)
    return out.returncode == 0 and "bench" in out.stdout


def test_harness_quick_run_measures_each_case_and_checks_targets() -> None:
    out = _run(
        str(BENCH / "run.py"), "--quick", "--duration", "0.3", "--warmup", "0.1",
        "--peers", "handrolled_reader,aiodisp", "--loops", "asyncio", "--json", "-",
    )
    doc = _json(out)
    rows = {(r["peer"], r["variant"]): r for r in doc["results"]}
    assert set(rows) == {("handrolled_reader", "raw"), ("aiodisp", "ack"), ("aiodisp", "raw")}
    for row in rows.values():
        assert row["mode"] == "client" and row["loop"] == "asyncio" and row["in_flight"] == 256
        assert row["per_round"][0]["completed"] > 0
        assert row["per_round"][0]["wrong"] == 0  # the common echo server answered correctly
        assert row["cpu_us_per_request"] > 0
    names = {t["name"] for t in doc["targets"]}
    assert "client ack, asyncio: aiodisp / add_reader-drain matcher" in names
    assert "client raw, asyncio: p99 aiodisp / add_reader-drain" in names
    assert doc["meta"]["rounds"] == 1


def test_harness_end_to_end_uses_the_peers_own_server() -> None:
    out = _run(
        str(BENCH / "run.py"), "--quick", "--duration", "0.3", "--warmup", "0.1",
        "--modes", "e2e", "--peers", "handrolled", "--loops", "asyncio", "--inflight", "16",
        "--json", "-",
    )
    (row,) = _json(out)["results"]
    assert (row["mode"], row["peer"], row["in_flight"]) == ("e2e", "handrolled", 16)
    assert row["per_round"][0]["completed"] > 0 and row["per_round"][0]["wrong"] == 0


def test_memory_benchmark_quick_holds_and_releases_pending_requests() -> None:
    out = _run(
        str(BENCH / "memory.py"), "--pending", "2000", "--total", "4000", "--no-trace",
        "--json", "-",
    )
    doc = json.loads(out.stdout[out.stdout.index("{"):])
    assert out.returncode == 0, out.stderr[-3000:]
    pending = doc["pending"]
    assert pending["pending_reached"] == 2000
    assert pending["outcomes"] == {"timeout": 2000} and pending["pending_after"] == 0
    assert pending["bytes_per_pending_total"] > 0
    assert doc["pending_with_replies"]["correct"] == 2000
    flat = doc["flat"]["outcomes"]
    assert flat["reply"] == 3600 and flat["timeout"] == 200 and flat["cancelled"] == 200


def test_aiodisp_bench_command_reports_json() -> None:
    if not _bench_wired():
        pytest.skip("`aiodisp bench` is not wired into cli.py yet")
    doc = _json(_run("-m", "aiodisp", "bench", "--count", "500", "--json"))
    assert doc["completed"] == 500
    assert doc["mismatched"] == 0 and doc["timeouts"] == 0
    assert doc["framing"] == "ack" and doc["in_flight"] == 256
    assert doc["requests_per_s"] > 0 and doc["p99_ms"] >= doc["p50_ms"] > 0


def test_aiodisp_bench_over_a_lossy_path_retransmits() -> None:
    if not _bench_wired():
        pytest.skip("`aiodisp bench` is not wired into cli.py yet")
    doc = _json(_run("-m", "aiodisp", "bench", "--count", "300", "--in-flight", "32",
                     "--loss", "0.1", "--seed", "3", "--framing", "raw", "--json"))
    assert doc["completed"] == 300 and doc["mismatched"] == 0
    assert doc["dropped_by_loss"] > 0 and doc["retransmissions"] > 0


def test_aiodisp_bench_rejects_a_bad_target() -> None:
    if not _bench_wired():
        pytest.skip("`aiodisp bench` is not wired into cli.py yet")
    out = _run("-m", "aiodisp", "bench", "--target", "nowhere", "--count", "10")
    assert out.returncode == 2
    assert "HOST:PORT" in out.stderr


def test_common_echo_server_answers_coap_and_rpcudp_correctly() -> None:
    sys.path.insert(0, str(BENCH))
    try:
        import echo_server  # type: ignore[import-not-found]
    finally:
        sys.path.remove(str(BENCH))
    body = (7).to_bytes(8, "big") + b"p" * 64
    # CoAP CON POST, token 0xab 0xcd, Uri-Path "echo" (option 11, length 4), payload
    con = bytes((0x42, 0x02, 0x12, 0x34, 0xAB, 0xCD, 0xB4)) + b"echo" + b"\xff" + body
    reply = echo_server.reply_coap(con)
    assert reply is not None
    assert reply[:6] == bytes((0x62, 0x45, 0x12, 0x34, 0xAB, 0xCD))  # ACK, 2.05, MID, token
    assert reply[6] == 0xFF and reply[7:] == ((7 | 1 << 63).to_bytes(8, "big") + b"p" * 64)
    non = bytes((0x52, 0x02, 0x00, 0x01, 0xAB, 0xCD, 0xB4)) + b"echo" + b"\xff" + body
    reply = echo_server.reply_coap(non)
    assert reply is not None and reply[0] == 0x52 and reply[4:6] == b"\xab\xcd"
    msgpack = pytest.importorskip("msgpack")
    request = b"\x00" + b"i" * 20 + msgpack.packb(["echo", [body]])
    reply = echo_server.reply_rpc(request)
    assert reply is not None and reply[:21] == b"\x01" + b"i" * 20
    assert msgpack.unpackb(reply[21:])[8:] == body[8:]


def test_aiodisp_bench_measures_a_server_started_with_serve() -> None:
    if not _bench_wired():
        pytest.skip("`aiodisp bench` is not wired into cli.py yet")
    import signal
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"), env.get("PYTHONPATH")]))
    server = subprocess.Popen(
        [sys.executable, "-m", "aiodisp", "bench", "--serve", f"127.0.0.1:{port}",
         "--framing", "raw"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT,
    )
    try:
        assert server.stdout is not None
        assert f"listening on udp://127.0.0.1:{port}" in server.stdout.readline()  # serving
        doc = _json(_run("-m", "aiodisp", "bench", "--target", f"127.0.0.1:{port}",
                         "--framing", "raw", "--count", "200", "--in-flight", "8", "--json"))
        assert doc["completed"] == 200 and doc["mismatched"] == 0
        assert doc["target"] == f"127.0.0.1:{port}"
    finally:
        server.send_signal(signal.SIGINT)
        _, err = server.communicate(timeout=30)
    assert server.returncode == 130, err  # Ctrl-C: stopped cleanly, exit status 130
    assert "Traceback" not in err


def test_multicore_benchmark_quick_serves_one_port_from_two_workers() -> None:
    out = _run(str(BENCH / "multicore.py"), "--quick", "--duration", "0.3", "--warmup", "0.1",
               "--clients", "1", "--sockets", "4", "--inflight", "16", "--json", "-")
    doc = _json(out)
    rows = {row["workers"]: row for row in doc["results"]}
    assert set(rows) == {1, 2}
    for row in rows.values():
        (measured,) = row["rounds"]
        assert measured["requests_per_s"] > 0 and measured["errors"] == 0
        assert len(measured["server_cpu_share"]) == row["workers"]


# ---------------------------------------------------------------------- issue 14's benchmarks


def _bench_module(name: str) -> Any:
    import importlib

    sys.path.insert(0, str(BENCH))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(BENCH))


def test_dns_zone_answers_like_an_authoritative_server() -> None:
    zone = _bench_module("dns_zone")
    reply = zone.answer(zone.wire_query(0xBEEF, "host-5.bench.example"))
    assert reply[:2] == b"\xbe\xef" and reply[2:4] == b"\x85\x00"  # QR AA RD, NOERROR
    assert reply[4:12] == b"\x00\x01\x00\x01\x00\x00\x00\x00"  # one question, one answer
    assert reply.endswith(bytes((10, 0, 0, 5)))  # A 10.0.0.5
    upper = zone.answer(zone.wire_query(1, "HOST-8.bench.example", 28))
    assert upper[3] == 0 and upper[7] == 1 and upper.endswith((8).to_bytes(2, "big"))
    assert zone.answer(zone.wire_query(1, "nohost-1.bench.example"))[3] == 3  # NXDOMAIN
    assert zone.answer(zone.wire_query(1, "www.example.org"))[3] == 5  # REFUSED
    assert zone.answer(b"\x00\x01\x01\x00\x00\x01" + bytes(6) + b"\x05ab")[3] == 1  # FORMERR
    assert zone.answer(b"\x00\x01\x80\x00" + bytes(8)) is None  # a response: no answer
    dns_message = pytest.importorskip("dns.message")
    parsed = dns_message.from_wire(reply)
    assert parsed.id == 0xBEEF and [str(rr) for rr in parsed.answer] == [
        "host-5.bench.example. 300 IN A 10.0.0.5"]


def test_dnsperf_serving_quick_run_answers_every_query() -> None:
    import shutil

    if shutil.which("dnsperf") is None:
        pytest.skip("dnsperf is not installed (apt-get install dnsperf)")
    doc = _json(_run(str(BENCH / "dnsperf_serving.py"), "--quick", "--duration", "0.5",
                     "--warmup", "0", "--responders", "aiodisp,reader", "--json", "-"))
    rows = {(r["loop"], r["responder"]): r for r in doc["rows"]}
    assert set(rows) == {(loop, r) for loop in ("asyncio", "uvloop") for r in ("aiodisp", "reader")}
    for row in rows.values():
        (measured,) = row["per_round"]
        assert measured["completed"] > 0 and measured["qps"] > 0
        assert measured["rcodes"]["NOERROR"] > 0 and measured["rcodes"]["NXDOMAIN"] > 0
        assert set(measured["rcodes"]) <= {"NOERROR", "NXDOMAIN"}
    assert {r["loop"] for r in doc["ratios"]} == {"asyncio", "uvloop"}
    assert all(r["ratio_median"] > 0 and r["cpu_ratio_median"] > 0 for r in doc["ratios"])


@pytest.mark.parametrize("receiver", ["bare", "adapter", "aiodisp"])
@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_serve_path_instructions_receivers_answer_every_query(receiver: str, loop: str) -> None:
    # (--run is what the benchmark runs under callgrind, here without it)
    out = _run(str(BENCH / "serve_path_instructions.py"), "--run", receiver, "--n", "50",
               "--loop", loop)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip() == f"{receiver}: 50 queries, 50 answers read back"


def test_oneway_quick_run_sends_and_delivers_with_each_sender() -> None:
    doc = _json(_run(str(BENCH / "oneway.py"), "--quick", "--duration", "0.2", "--loops",
                     "asyncio", "--json", "-"))
    rows = {r["sender"]: r for r in doc["results"]}
    assert set(rows) == {"sendto", "transport", "aiodisp-ack-send_nowait",
                         "aiodisp-ack-notify_unreliable", "aiodisp-raw-send_nowait",
                         "aiodisp-raw-notify_unreliable"}
    for name, row in rows.items():
        (measured,) = row["per_round"]
        assert measured["sent"] > 0 and measured["received_messages"] > 0, name
        assert measured["received_messages"] <= measured["sent_in_all"], name
        if name.startswith("aiodisp"):
            assert measured["datagrams"] > 0 and "vs_sendto" in row


def test_gso_gro_prototype_glues_and_splits_bursts() -> None:
    if not sys.platform.startswith("linux"):
        pytest.skip("UDP_SEGMENT and UDP_GRO are Linux socket options")
    doc = _json(_run(str(BENCH / "gso_gro.py"), "--quick", "--duration", "0.2", "--json", "-"))
    rows = {(r["send"], r["receive"]): r for r in doc["results"]}
    assert set(rows) == {("sendto", "recv"), ("gso", "recv"), ("gso", "gro"), ("sendto", "gro")}
    for row in rows.values():
        assert row["per_round"][0]["receiver"]["datagrams"] > 0
    # one GSO send of 8 reached a GRO receiver in fewer reads than datagrams
    assert rows[("gso", "gro")]["receiver_calls_per_datagram"] < 1
    assert rows[("sendto", "recv")]["receiver_calls_per_datagram"] == 1


def test_coalesce_prototype_bundles_round_trip_and_answer_correctly() -> None:
    proto = _bench_module("coalesce_prototype")
    msgs = [b"a" * 72, b"", b"xyz"]
    assert proto.unbundle(proto.bundle(msgs)) == msgs
    assert proto.unbundle(proto.bundle(msgs)[:-1]) == msgs[:2]  # a cut bundle stops early
    doc = _json(_run(str(BENCH / "coalesce_prototype.py"), "--quick", "--duration", "0.2",
                     "--ks", "plain,4", "--json", "-"))
    rows = {r["k"]: r for r in doc["results"]}
    assert set(rows) == {"plain", 4}
    assert rows[4]["replies_per_datagram"] == 4 and rows["plain"]["replies_per_datagram"] == 1
    assert all(r["wrong"] == 0 and r["messages_per_s"] > 0 for r in rows.values())


def _syscall_tool() -> str | None:
    import shutil

    if shutil.which("perf"):
        probe = subprocess.run(["perf", "stat", "-e", "raw_syscalls:sys_enter", "true"],
                               capture_output=True, check=False)
        if probe.returncode == 0:
            return "perf"
    if shutil.which("strace"):
        probe = subprocess.run(["strace", "-c", "-o", os.devnull, "true"],
                               capture_output=True, check=False)
        if probe.returncode == 0:
            return "strace"
    return None


def test_syscalls_quick_run_counts_one_send_per_request() -> None:
    tool = _syscall_tool()
    if tool is None:
        pytest.skip("neither perf (with syscall tracepoints) nor strace works here")
    doc = _json(_run(str(BENCH / "syscalls.py"), "--quick", "--tool", tool, "--cases",
                     "aiodisp/raw", "--loops", "asyncio", "--json", "-", timeout=120))
    (row,) = doc["results"]
    client = row["client"]["per_request"]
    sends = client.get("sendto", 0) + client.get("sendmsg", 0)
    assert 0.9 <= sends <= 1.1  # one datagram per request today (coalescing would lower it)
    assert client["total"] >= sends


def test_request_profile_quick_counts_the_library_calls_per_request() -> None:
    doc = _json(_run(str(BENCH / "request_profile.py"), "--quick", "--cases", "aiodisp/raw",
                     "--json", "-"))
    prof = doc["results"]["aiodisp/raw"]["cprofile"]
    assert prof["groups"]["library (aiodisp)"]["calls_per_request"] >= 1
    assert any(row["group"] == "library (aiodisp)" for row in prof["top"])
