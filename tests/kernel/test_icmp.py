"""ICMP fail-fast: a call to a UDP port where nothing listens fails at once.

The kernel answers a datagram to a closed port with ICMP port unreachable;
with IP_RECVERR / IPV6_RECVERR it queues that error on the socket, and the
transport reads it (:mod:`aiodisp._transports.icmp`). Every call in flight to
that peer fails with :class:`aiodisp.PeerUnreachable` well before its
timeout; other peers are not disturbed. Loopback only: no root needed.
"""

from __future__ import annotations

import asyncio
import socket
import sys
from typing import Any

import pytest

import aiodisp
from aiodisp._transports.loop_datagram import LoopDatagramTransport
from tests.helpers.adapters import KeyAdapter
from tests.helpers.servers import echo_server

pytestmark = [
    pytest.mark.both_loops,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="IP_RECVERR is Linux's"),
]

#: The local address bound (None: the dual-stack wildcard) and the host of the closed port.
CASES = [
    pytest.param(("127.0.0.1", 0), "127.0.0.1", id="ipv4"),
    pytest.param(("::1", 0), "::1", id="ipv6"),
    pytest.param(None, "127.0.0.1", id="dual-stack-ipv4-peer"),
    pytest.param(None, "::1", id="dual-stack-ipv6-peer"),
]
FAST = 0.5  # seconds: the bound; a timeout of 5 s shows it was not the timeout


def closed_port(host: str) -> tuple[Any, ...]:
    """An address on ``host`` where nothing listens (a port just bound and closed)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        port = s.getsockname()[1]
    return (host, port) if family == socket.AF_INET else (host, port, 0, 0)


@pytest.mark.parametrize(("local", "host"), CASES)
@pytest.mark.parametrize("kind", ["request", "notify"])
async def test_a_call_to_a_closed_port_fails_with_peer_unreachable_at_once(
    local: Any, host: str, kind: str
) -> None:
    async with await aiodisp.open_udp(KeyAdapter(), local) as d:
        dest = closed_port(host)
        loop = asyncio.get_running_loop()
        start = loop.time()
        call = d.request if kind == "request" else d.notify
        with pytest.raises(aiodisp.PeerUnreachable) as info:
            await call((1, b"anyone?"), dest, timeout=5.0)
        took = loop.time() - start
        assert took < FAST, took
        error = info.value
        assert isinstance(error, aiodisp.TransportError) and error.errno == 111
        assert error.addr[:2] == dest[:2] and error.key == 1 and error.attempts == 1
        assert "nothing listens" in str(error)
        assert d.stats.unreachable == 1 and d.stats.timeouts == 0 and d.pending == 0


async def test_every_call_in_flight_to_that_peer_fails_and_other_peers_go_on() -> None:
    async with await aiodisp.open_udp(KeyAdapter(), ("127.0.0.1", 0)) as server, \
            await aiodisp.open_udp(KeyAdapter(), ("127.0.0.1", 0)) as d:
        serving = asyncio.create_task(echo_server(server))
        dead = closed_port("127.0.0.1")
        loop = asyncio.get_running_loop()
        start = loop.time()
        results = await asyncio.gather(
            *(d.request((i, b""), dead, timeout=5.0) for i in range(8)),
            *(d.request((100 + i, b"live"), server.local_addr, timeout=5.0) for i in range(8)),
            return_exceptions=True,
        )
        assert loop.time() - start < FAST
        assert all(isinstance(r, aiodisp.PeerUnreachable) for r in results[:8])
        assert results[8:] == [(100 + i, b"live") for i in range(8)]
        assert d.stats.unreachable == 8 and d.stats.timeouts == 0
        serving.cancel()


async def test_a_peer_that_starts_listening_is_reached_again() -> None:
    async with await aiodisp.open_udp(KeyAdapter(), ("127.0.0.1", 0)) as d:
        dest = closed_port("127.0.0.1")
        with pytest.raises(aiodisp.PeerUnreachable):
            await d.request((1, b""), dest, timeout=5.0)
        async with await aiodisp.open_udp(KeyAdapter(), dest) as server:
            serving = asyncio.create_task(echo_server(server))
            assert await d.request((2, b"back"), dest, timeout=5.0) == (2, b"back")
            serving.cancel()


async def test_the_error_queue_is_read_so_the_loop_does_not_spin() -> None:
    """An unread error queue keeps the socket polling as in error: a selector loop
    would spin at full CPU (and uvloop's own transport would crash)."""
    async with await aiodisp.open_udp(KeyAdapter(), ("127.0.0.1", 0)) as d:
        if asyncio.get_running_loop().__class__.__module__.startswith("uvloop"):
            assert isinstance(d.transport, LoopDatagramTransport)
        dest = closed_port("127.0.0.1")
        for i in range(20):
            await d.notify_unreliable((i, b""), dest)
        cpu = _cpu()
        await asyncio.sleep(0.3)
        assert _cpu() - cpu < 0.1  # idle, not spinning
        assert d.stats.transport_errors >= 1


def _cpu() -> float:
    import time

    return time.process_time()
