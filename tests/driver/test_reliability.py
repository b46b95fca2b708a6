"""Reliable delivery through a lossy, duplicating, reordering memory link."""

from __future__ import annotations

import asyncio
import collections
from typing import Any

import pytest

import aiodisp
from tests.helpers.adapters import FlagAdapter, KeyAdapter

pytestmark = pytest.mark.both_loops

HOSTILE = aiodisp.Link(loss=0.2, duplicate=0.1, reorder=0.1, delay=0.002, seed=7)
#: These tests are about exactly-once delivery and the tables' bounds, not the rate:
#: under 20 % random loss each way the congestion window would (rightly) hold 200
#: calls to one or two at a time, and the retry budget (a fifth of first sends plus
#: 10/s) would refuse the retransmissions a third of the calls need. Both are tested
#: on lossy links in tests/driver/test_congestion.py.
NO_WINDOW: dict[str, Any] = {"congestion": False, "retry_budget": None}
COUNT = 2000
IN_FLIGHT = 200


async def _bounded(count: int, make: Any) -> list[Any]:
    sem = asyncio.Semaphore(IN_FLIGHT)

    async def one(i: int) -> Any:
        async with sem:
            return await make(i)

    return await asyncio.gather(*(one(i) for i in range(count)))


async def test_every_notify_returns_and_is_delivered_exactly_once() -> None:
    a, b = await aiodisp.open_memory_pair(KeyAdapter(), link=HOSTILE, timeout=30, **NO_WINDOW)
    assert not a.transport.reliable
    seen: collections.Counter[int] = collections.Counter()

    async def reader() -> None:
        async for msg, _size, _addr in b:
            seen[msg[0]] += 1

    task = asyncio.create_task(reader())
    async with a, b:
        await _bounded(COUNT, lambda i: a.notify((i, b"n%d" % i), b.local_addr))
        await asyncio.sleep(0.1)  # late duplicates still in flight must not be delivered
        assert set(seen) == set(range(COUNT))
        assert max(seen.values()) == 1
        net = a.transport.counters  # type: ignore[attr-defined]  # the memory link's
        assert net.lost > 0 and net.duplicated > 0 and net.reordered > 0
        assert a.stats.retransmissions > 0 and b.stats.duplicates > 0
        assert a.pending == 0
    await task


async def test_every_request_is_answered_and_served_exactly_once() -> None:
    a, b = await aiodisp.open_memory_pair(FlagAdapter(), link=HOSTILE, timeout=30, **NO_WINDOW)
    served: collections.Counter[int] = collections.Counter()

    async def server() -> None:
        async for (key, body, _), _size, addr in b:
            served[key] += 1
            await b.notify_unreliable((key, body.upper(), True), addr)

    task = asyncio.create_task(server())
    policy = aiodisp.RetryPolicy(initial_timeout=0.02, max_attempts=None, max_interval=0.2)
    async with a, b:
        replies = await _bounded(
            COUNT, lambda i: a.request((i, b"q%d" % i, False), b.local_addr, retry=policy)
        )
        assert replies == [(i, b"Q%d" % i, True) for i in range(COUNT)]
        await asyncio.sleep(0.1)
        assert set(served) == set(range(COUNT)) and max(served.values()) == 1
        assert a.stats.retransmissions > 0 and b.stats.replies_resent > 0
    await task


async def test_raw_framing_retries_work_without_deduplication() -> None:
    link = aiodisp.Link(loss=0.2, seed=3)
    a, b = await aiodisp.open_memory_pair(FlagAdapter(), link=link, framing="raw", **NO_WINDOW)
    served: collections.Counter[int] = collections.Counter()

    async def server() -> None:
        async for (key, body, _), _size, addr in b:
            served[key] += 1
            await b.notify_unreliable((key, body, True), addr)

    task = asyncio.create_task(server())
    policy = aiodisp.RetryPolicy(initial_timeout=0.02, max_attempts=None, max_interval=0.1)
    async with a, b:
        replies = await _bounded(
            300, lambda i: a.request((i, b"", False), b.local_addr, timeout=30, retry=policy)
        )
        assert len(replies) == 300
        assert max(served.values()) > 1  # lost replies made the server see retries
    await task


async def test_adaptive_notify_learns_the_round_trip_time() -> None:
    link = aiodisp.Link(delay=0.01, seed=1)
    a, b = await aiodisp.open_memory_pair(KeyAdapter(), link=link)
    async with a, b:
        # a second pair on a lossy link: the RTT estimate is per dispatcher and peer
        lossy = aiodisp.Link(delay=0.01, loss=0.0001, seed=1)
        c, d = await aiodisp.open_memory_pair(KeyAdapter(), link=lossy)
        async with c, d:
            for i in range(30):
                await c.notify((i, b""), d.local_addr)
            rto = c.rto(d.local_addr)
            assert 0.02 <= rto <= 0.1, rto  # ~2 x 10 ms one-way, floored at 50 ms
        assert a.rto(b.local_addr) == 0.25  # nothing measured: the initial guess


@pytest.mark.parametrize("kind", ["request", "notify"])
async def test_cancelling_and_timing_out_thousands_of_calls_leaves_nothing_behind(
    kind: str,
) -> None:
    a, b = await aiodisp.open_memory_pair(
        KeyAdapter(), link=aiodisp.Link(loss=1.0, seed=1), **NO_WINDOW
    )
    policy = aiodisp.RetryPolicy(initial_timeout=0.01, max_attempts=None)
    before = len(asyncio.all_tasks())
    async with a, b:

        def call(i: int, timeout: float) -> Any:
            if kind == "request":
                return a.request((i, b""), b.local_addr, timeout=timeout, retry=policy)
            return a.notify((i, b""), b.local_addr, timeout=timeout, retry=policy)

        tasks = [asyncio.create_task(call(i, 30)) for i in range(3000)]
        timed = [asyncio.create_task(call(10_000 + i, 1.0)) for i in range(3000)]
        async with asyncio.timeout(5):
            while a.pending < 6000:  # every call registered, none timed out yet
                await asyncio.sleep(0.001)
        for t in tasks:
            t.cancel()
        results = await asyncio.gather(*tasks, *timed, return_exceptions=True)
        assert all(isinstance(r, asyncio.CancelledError) for r in results[:3000])
        assert all(isinstance(r, aiodisp.RequestTimeout) for r in results[3000:])
        core = a._core
        assert a.pending == 0 and not core.waiting and not core.acking
        assert core.next_deadline() is None and a._timer is None
        assert core.heap_size == 0
        assert len(asyncio.all_tasks()) == before
        assert a.stats.cancelled == 3000 and a.stats.timeouts == 3000
