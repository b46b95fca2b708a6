"""Memory stays flat under a flood of well-formed messages, once the caches are full.

Garbage is dropped before it costs anything; a well-formed message costs an
entry in the duplicate log (ACK framing) until ``dedup_capacity`` is reached,
then the oldest entry goes. Measured with tracemalloc in this process.
"""

from __future__ import annotations

import asyncio
import gc
import socket
import tracemalloc
from collections.abc import Iterator
from typing import Any

import pytest

import aiodisp
from aiodisp._core.delivery_log import EVICT_BATCH
from aiodisp._core.framing import FLAG_ACK_REQUESTED, pack_header
from aiodisp.adapters import IdMessage, IdPrefixAdapter
from tests.helpers.flood import accounted, send_paced

MiB = 2**20
ADAPTER = IdPrefixAdapter()


@pytest.fixture
def traced() -> Iterator[None]:
    tracemalloc.start()
    yield
    tracemalloc.stop()


@pytest.fixture
def attacker() -> Iterator[socket.socket]:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock


def requests(first: int, count: int, payload: bytes = b"flood") -> Iterator[bytes]:
    """Well-formed requests with distinct packet ids, asking for an ACK."""
    for i in range(first, first + count):
        yield pack_header(FLAG_ACK_REQUESTED, i) + ADAPTER.msg_to_raw(IdMessage(i, payload))


def traced_now() -> int:
    gc.collect()
    return tracemalloc.get_traced_memory()[0]


async def test_memory_is_flat_once_the_duplicate_log_is_full(
    traced: None, attacker: socket.socket
) -> None:
    victim = await aiodisp.open_udp(ADAPTER, ("127.0.0.1", 0), dedup_capacity=5000)

    async def app() -> None:
        async for _ in victim:
            pass

    reading = asyncio.create_task(app())
    received = lambda: victim.stats.received  # noqa: E731
    try:
        await send_paced(attacker, requests(0, 100), victim.local_addr, received)
        start = traced_now()
        tracemalloc.reset_peak()
        await send_paced(attacker, requests(100, 10_000), victim.local_addr, received,
                         chunk=100)
        full = traced_now()  # the log holds 5000 entries now
        await send_paced(attacker, requests(10_100, 20_000), victim.local_addr, received,
                         chunk=100)
        later = traced_now()
        peak = tracemalloc.get_traced_memory()[1]
        s = victim.stats
        assert s.delivered == 30_100 and s.acks_sent == 30_100 and accounted(s)
        # full: the oldest go a few at a time
        assert 5000 - EVICT_BATCH <= len(victim._core.log) <= 5000
        # 20,000 more messages past the bound cost (next to) nothing more...
        assert later - full < 1 * MiB, (later - full) / MiB
        # ...and the whole flood stayed far below 20 MiB.
        assert peak - start < 20 * MiB, (peak - start) / MiB
    finally:
        await victim.close()
        await reading


async def test_replies_cached_for_a_flood_of_requests_stay_within_a_bounded_size(
    traced: None, attacker: socket.socket
) -> None:
    victim = await aiodisp.open_udp(ADAPTER, ("127.0.0.1", 0))
    reply_payload = bytes(4096)

    async def serve() -> None:
        async for msg, _, addr in victim:
            await victim.notify_unreliable(msg._replace(reply=True, payload=reply_payload),
                                           addr)

    serving = asyncio.create_task(serve())
    received = lambda: victim.stats.received  # noqa: E731
    try:
        await send_paced(attacker, requests(0, 100), victim.local_addr, received)
        start = traced_now()
        await send_paced(attacker, requests(100, 10_000), victim.local_addr, received,
                         chunk=100)
        await asyncio.sleep(0.05)  # let the application answer the last ones
        grown = traced_now() - start
        assert victim.stats.delivered == 10_100
        # 10,000 small requests must not pin 40 MiB of replies.
        assert grown < 20 * MiB, grown / MiB
    finally:
        await victim.close()
        await serving


async def test_garbage_costs_no_memory_at_all(traced: None, attacker: socket.socket) -> None:
    victim = await aiodisp.open_udp(ADAPTER, ("127.0.0.1", 0))
    received = lambda: victim.stats.received  # noqa: E731
    junk: list[Any] = [b"\x01", b"", pack_header(2, 5), pack_header(0, 1) + b"\x00",
                       pack_header(0x80, 1) + bytes(20)]
    try:
        await send_paced(attacker, junk * 20, victim.local_addr, received)
        start = traced_now()
        await send_paced(attacker, junk * 4000, victim.local_addr, received, chunk=100)
        assert traced_now() - start < 256 * 1024
        assert victim.stats.received == 20_100 and accounted(victim.stats)
    finally:
        await victim.close()
