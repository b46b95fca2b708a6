"""The lossy path of ``aiodisp bench --loss``: a FaultyTransport around a real UDP socket.

It is the memory link's fault injection, not a copy of it: for one seed and
one sequence of datagrams, both carriers make the same decisions and deliver
the same bytes.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections import Counter
from collections.abc import Iterator

import pytest

import aiodisp
from aiodisp._transports.base import Address
from aiodisp._transports.faults import FaultyTransport, LinkCounters
from aiodisp._transports.memory import MemoryNetwork
from tests.helpers.adapters import KeyAdapter
from tests.helpers.flood import drain

HOSTILE = aiodisp.Link(loss=0.2, duplicate=0.2, reorder=0.3, corrupt=0.1, delay=0.001,
                       reorder_window=0.01, seed=9)
DATAGRAMS = [b"datagram %03d " % i + bytes(range(i % 40)) for i in range(300)]


class Collect:
    """A DatagramSink that keeps what arrives, and when."""

    def __init__(self) -> None:
        self.arrived: list[tuple[bytes, Address, float]] = []
        self.errors: list[Exception] = []

    def datagram_received(self, data: bytes, addr: Address) -> None:
        self.arrived.append((data, addr, time.monotonic()))

    def error_received(self, exc: Exception) -> None:
        self.errors.append(exc)


@pytest.fixture
def receiver() -> Iterator[socket.socket]:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        s.setblocking(False)
        yield s


def _decisions(counters: LinkCounters) -> tuple[int, ...]:
    return (counters.sent, counters.lost, counters.duplicated, counters.reordered,
            counters.corrupted)


async def _through_memory(link: aiodisp.Link) -> tuple[LinkCounters, Counter[bytes]]:
    net = MemoryNetwork(link)
    a, b = net.transport(), net.transport()
    sink = Collect()
    b.start(sink)
    for data in DATAGRAMS:
        a.send(data, b.local_addr)
    await asyncio.sleep(link.delay + link.reorder_window + 0.05)
    a.close()
    b.close()
    return a.counters, Counter(data for data, _addr, _t in sink.arrived)


async def test_sending_makes_the_memory_links_decisions_over_udp(
    receiver: socket.socket,
) -> None:
    memory_counters, memory_bytes = await _through_memory(HOSTILE)
    lossy = FaultyTransport.over_udp(("127.0.0.1", 0), HOSTILE, buffer_size=None,
                                     incoming=False)
    sink = Collect()
    lossy.start(sink)
    try:
        for data in DATAGRAMS:
            lossy.send(data, receiver.getsockname())
        await asyncio.sleep(HOSTILE.delay + HOSTILE.reorder_window + 0.1)
    finally:
        lossy.close()
    assert _decisions(lossy.counters) == _decisions(memory_counters)
    assert all(_decisions(memory_counters)[1:])  # every kind of fault happened
    assert Counter(drain(receiver)) == memory_bytes  # the same bytes, corruption included
    assert not sink.errors


async def test_receiving_goes_through_the_faults_too(receiver: socket.socket) -> None:
    link = aiodisp.Link(delay=0.05, duplicate=1.0, seed=1)
    lossy = FaultyTransport.over_udp(("127.0.0.1", 0), link, buffer_size=None,
                                     outgoing=False)
    sink = Collect()
    lossy.start(sink)
    try:
        sent = time.monotonic()
        receiver.sendto(b"one", lossy.local_addr)
        deadline = time.monotonic() + 10
        while len(sink.arrived) < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
    finally:
        lossy.close()
    assert [data for data, _addr, _t in sink.arrived] == [b"one", b"one"]  # duplicated
    assert all(t - sent >= 0.05 for _data, _addr, t in sink.arrived)  # and delayed
    assert lossy.received_counters.duplicated == 1 and lossy.counters.sent == 0


async def test_closing_drops_what_the_link_still_holds(receiver: socket.socket) -> None:
    lossy = FaultyTransport.over_udp(("127.0.0.1", 0), aiodisp.Link(delay=0.05),
                                     buffer_size=None)
    lossy.start(Collect())
    lossy.send(b"late", receiver.getsockname())
    lossy.close()
    await asyncio.sleep(0.1)
    assert drain(receiver) == []


async def test_a_dispatcher_over_a_lossy_path_still_gets_its_replies() -> None:
    # (coalesce=False on both sides, here and below: one datagram per message, so
    # the seeded link's losses fall on each message on its own, as they always did)
    server = await aiodisp.open_udp(KeyAdapter(), ("127.0.0.1", 0), coalesce=False)
    serving = asyncio.create_task(server.serve(lambda msg, _addr: msg))
    lossy = FaultyTransport.over_udp(("127.0.0.1", 0), aiodisp.Link(loss=0.3, seed=4),
                                     buffer_size=None)
    # (30 % loss: about replies getting through, not the rate: no window, no budget)
    client = aiodisp.Dispatcher(lossy, KeyAdapter(), congestion=False, retry_budget=None,
                                coalesce=False)
    retry = aiodisp.RetryPolicy(initial_timeout=0.02, max_attempts=20)
    try:
        assert not lossy.reliable
        replies = await asyncio.gather(*(
            client.request((i, b"x"), server.local_addr, timeout=10, retry=retry)
            for i in range(50)
        ))
        assert [key for key, _ in replies] == list(range(50))
        assert lossy.counters.lost + lossy.received_counters.lost > 0
        assert client.stats.retransmissions > 0
    finally:
        await client.close()
        await server.close()
        await serving
