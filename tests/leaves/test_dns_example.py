"""examples/dns_resolver.py against a real DNS server: dnsmasq on loopback.

dnsmasq serves a zone written here (200 names with an A record, every fourth
with an AAAA too) from a hosts file, with no upstream: names under
``test.example`` it does not know get NXDOMAIN (``--local``), names elsewhere
get REFUSED. The silent-server tests need no dnsmasq.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import ipaddress
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import dns.exception
import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.IN.A
import pytest

import aiodisp

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "dns_resolver.py"
ZONE = "test.example"
NAMES = 200


def _load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("dns_resolver_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


dns_resolver: Any = _load_example()


def zone() -> dict[tuple[str, str], list[str]]:
    """(name, type) -> the addresses dnsmasq must answer."""
    records: dict[tuple[str, str], list[str]] = {}
    for i in range(NAMES):
        name = f"host-{i}.{ZONE}"
        records[name, "A"] = [str(ipaddress.IPv4Address("10.77.0.1") + i)]
        if i % 4 == 0:
            records[name, "AAAA"] = [str(ipaddress.IPv6Address("fd00:77::1") + i)]
    return records


def _dnsmasq_binary() -> str | None:
    return shutil.which("dnsmasq") or next(
        (p for p in ("/usr/sbin/dnsmasq", "/sbin/dnsmasq") if Path(p).exists()), None
    )


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:  # dnsmasq binds TCP too
        t.bind(("127.0.0.1", port))
    return port


def _answers(port: int) -> bool:
    """Whether a DNS server on ``port`` answers a name of the zone (its hosts file is loaded)."""
    query = dns.message.make_query(f"host-0.{ZONE}", "A")
    try:
        response = dns.query.udp(query, "127.0.0.1", port=port, timeout=0.2)
    except (dns.exception.Timeout, OSError):
        return False
    return response.rcode() == dns.rcode.NOERROR and bool(response.answer)


@pytest.fixture(scope="module")
def dnsmasq(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    """A dnsmasq in the foreground on a free loopback port, serving :func:`zone`."""
    binary = _dnsmasq_binary()
    if binary is None:
        pytest.skip("dnsmasq is not installed (Debian: apt-get install dnsmasq-base)")
    workdir = tmp_path_factory.mktemp("dnsmasq")
    hosts = workdir / "hosts"
    hosts.write_text(
        "".join(f"{addrs[0]} {name}\n" for (name, _t), addrs in sorted(zone().items()))
    )
    log = workdir / "log"
    for _ in range(3):  # a free port can be taken between our probe and dnsmasq's bind
        port = _free_udp_port()
        with log.open("wb") as out:  # a file, not a pipe nobody reads: it cannot fill up
            proc = subprocess.Popen(
                [
                    binary, "--no-daemon", "--conf-file=/dev/null", "--no-resolv", "--no-hosts",
                    f"--addn-hosts={hosts}", f"--local=/{ZONE}/", f"--port={port}",
                    "--listen-address=127.0.0.1", "--bind-interfaces", "--pid-file",
                    "--log-facility=-",
                    "--user=root",  # as root, dnsmasq would drop to nobody, who cannot read tmp
                ],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 15
        while proc.poll() is None and time.monotonic() < deadline:
            if _answers(port):
                break
            time.sleep(0.05)
        else:
            proc.kill()
            proc.wait()
            continue
        break
    else:
        pytest.fail(f"dnsmasq did not start: {log.read_text(errors='replace')}")
    try:
        yield "127.0.0.1", port
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def silent_server() -> Iterator[socket.socket]:
    """A bound UDP socket that reads what it is sent but never answers."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.setblocking(False)
        yield s


def _drain(sock: socket.socket) -> list[bytes]:
    out = []
    with contextlib.suppress(BlockingIOError):
        while True:
            out.append(sock.recv(65535))
    return out


async def _recvfrom(sock: socket.socket) -> tuple[bytes, Any]:
    """One datagram from a non-blocking socket, polled (works on every event loop)."""
    while True:
        try:
            return sock.recvfrom(65535)
        except BlockingIOError:
            await asyncio.sleep(0.005)


# ---------------------------------------------------------------------- against dnsmasq


async def test_500_concurrent_queries_all_answered_as_the_zone_says(
    dnsmasq: tuple[str, int],
) -> None:
    records = zone()
    questions = sorted(records)  # 200 A + 50 AAAA
    questions += [(f"host-{i % NAMES}.{ZONE}", "A") for i in range(500 - len(questions))]
    assert len(questions) == 500
    retry = aiodisp.RetryPolicy(initial_timeout=0.2, backoff=2.0, max_attempts=8)
    async with dns_resolver.Resolver(dnsmasq, timeout=30.0, retry=retry) as resolver:
        answers = await asyncio.gather(*(resolver.resolve(n, t) for n, t in questions))
        stats = resolver.stats
    for (name, rdtype), got in zip(questions, answers, strict=True):
        assert got == records[name, rdtype], (name, rdtype)
    assert stats.replies_matched == 500
    assert stats.timeouts == 0


async def test_library_function_resolves_a_and_aaaa(dnsmasq: tuple[str, int]) -> None:
    assert await dns_resolver.resolve(f"host-8.{ZONE}", "A", server=dnsmasq) == ["10.77.0.9"]
    assert await dns_resolver.resolve(f"host-8.{ZONE}", "AAAA", server=dnsmasq) == ["fd00:77::9"]


async def test_unknown_name_in_the_local_zone_is_nxdomain(dnsmasq: tuple[str, int]) -> None:
    with pytest.raises(dns_resolver.DnsError) as caught:
        await dns_resolver.resolve(f"nope.{ZONE}", "A", server=dnsmasq)
    assert caught.value.rcode == dns.rcode.NXDOMAIN
    assert "NXDOMAIN" in str(caught.value)


async def test_name_outside_the_zone_is_refused_without_upstream(
    dnsmasq: tuple[str, int],
) -> None:
    with pytest.raises(dns_resolver.DnsError) as caught:
        await dns_resolver.resolve("www.elsewhere.example", "A", server=dnsmasq)
    assert caught.value.rcode == dns.rcode.REFUSED


async def test_name_without_the_type_answers_empty(dnsmasq: tuple[str, int]) -> None:
    async with dns_resolver.Resolver(dnsmasq) as resolver:
        assert await resolver.resolve(f"host-1.{ZONE}", "AAAA") == []
        response = await resolver.query(f"host-1.{ZONE}", "AAAA")
    assert response.rcode() == dns.rcode.NOERROR
    assert response.flags & dns.flags.QR


def test_script_prints_answers_and_fails_on_nxdomain(dnsmasq: tuple[str, int]) -> None:
    server = f"{dnsmasq[0]}:{dnsmasq[1]}"
    ok = subprocess.run(
        [sys.executable, str(EXAMPLE), "--server", server, f"host-4.{ZONE}", "A", "AAAA"],
        capture_output=True, text=True, timeout=60,
    )
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.splitlines() == [
        f"host-4.{ZONE} A 10.77.0.5",
        f"host-4.{ZONE} AAAA fd00:77::5",
    ]
    missing = subprocess.run(
        [sys.executable, str(EXAMPLE), "--server", server, f"nope.{ZONE}"],
        capture_output=True, text=True, timeout=60,
    )
    assert missing.returncode == 1
    assert "NXDOMAIN" in missing.stderr
    assert "Traceback" not in missing.stderr


# ---------------------------------------------------------------------- a silent server


async def test_silent_server_times_out_after_every_retry(silent_server: socket.socket) -> None:
    server = silent_server.getsockname()
    retry = aiodisp.RetryPolicy(initial_timeout=0.05, backoff=2.0, max_attempts=3)
    async with dns_resolver.Resolver(server, timeout=10.0, retry=retry) as resolver:
        with pytest.raises(aiodisp.RequestTimeout) as caught:
            await resolver.resolve(f"host-1.{ZONE}", "A")
    assert caught.value.attempts == 3
    sent = [dns.message.from_wire(raw) for raw in _drain(silent_server)]
    assert len(sent) == 3  # the same query, retransmitted
    assert len({m.id for m in sent}) == 1
    assert all(str(m.question[0].name) == f"host-1.{ZONE}." for m in sent)


async def test_forged_answer_from_another_address_is_ignored(
    silent_server: socket.socket,
) -> None:
    """An answer with the right id but from the wrong address does not complete the query."""
    server = silent_server.getsockname()
    retry = aiodisp.RetryPolicy(initial_timeout=5.0, max_attempts=1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as forger:
        forger.bind(("127.0.0.1", 0))
        async with dns_resolver.Resolver(server, timeout=10.0, retry=retry) as resolver:
            pending = asyncio.create_task(resolver.resolve(f"host-2.{ZONE}", "A"))
            raw, client = await _recvfrom(silent_server)
            query = dns.message.from_wire(raw)

            def answer(ip: str) -> bytes:
                response = dns.message.make_response(query)
                rrset = response.find_rrset(
                    response.answer, query.question[0].name, dns.rdataclass.IN,
                    dns.rdatatype.A, create=True,
                )
                rrset.add(dns.rdtypes.IN.A.A(dns.rdataclass.IN, dns.rdatatype.A, ip), 60)  # type: ignore[no-untyped-call]
                return response.to_wire()

            forger.sendto(answer("6.6.6.6"), client)
            garbage = b"\x00\x01 not a DNS message"
            silent_server.sendto(garbage, client)
            while resolver.stats.received < 2:
                await asyncio.sleep(0.01)
            assert not pending.done()
            silent_server.sendto(answer("10.77.0.3"), client)
            assert await pending == ["10.77.0.3"]
            stats = resolver.stats
    assert stats.replies_matched == 1
    assert stats.wrong_source == 1
    assert stats.decode_errors == 1


async def test_answer_to_another_question_is_not_accepted_and_the_query_waits(
    silent_server: socket.socket,
) -> None:
    """The right id from the right server, but for another name: accept= refuses it."""
    server = silent_server.getsockname()
    retry = aiodisp.RetryPolicy(initial_timeout=5.0, max_attempts=1)
    async with dns_resolver.Resolver(server, timeout=10.0, retry=retry) as resolver:
        pending = asyncio.create_task(resolver.resolve(f"host-5.{ZONE}", "A"))
        raw, client = await _recvfrom(silent_server)
        query = dns.message.from_wire(raw)

        def answer(name: str, ip: str) -> bytes:
            asked = dns.message.make_query(name, "A", id=query.id)
            response = dns.message.make_response(asked)
            rrset = response.find_rrset(
                response.answer, asked.question[0].name, dns.rdataclass.IN,
                dns.rdatatype.A, create=True,
            )
            rrset.add(dns.rdtypes.IN.A.A(dns.rdataclass.IN, dns.rdatatype.A, ip), 60)  # type: ignore[no-untyped-call]
            return response.to_wire()

        silent_server.sendto(answer("evil.example", "6.6.6.6"), client)
        while resolver.stats.unaccepted < 1:
            await asyncio.sleep(0.01)
        assert not pending.done()
        silent_server.sendto(answer(f"host-5.{ZONE}", "10.77.0.6"), client)
        assert await pending == ["10.77.0.6"]
        stats = resolver.stats
    assert stats.unaccepted == 1 and stats.replies_matched == 1 and stats.wrong_source == 0
