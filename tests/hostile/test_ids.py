"""aiodisp.ids: unguessable request ids (the application's half of spoofing defence)."""

from __future__ import annotations

import asyncio
import itertools
import random
from collections import Counter, deque

import pytest

import aiodisp
from aiodisp.adapters import IdMessage, IdPrefixAdapter
from aiodisp.ids import RequestIds, random_id


def test_random_id_stays_within_its_bits() -> None:
    for bits in (1, 7, 8, 16, 56, 63, 64, 128):
        draws = [random_id(bits) for _ in range(200)]
        assert all(0 <= x < 1 << bits for x in draws)
        if bits >= 56:
            assert len(set(draws)) == 200  # a repeat has odds below 1e-12
    assert all(0 <= random_id() < 1 << 63 for _ in range(1000))


def test_random_id_uses_the_whole_range() -> None:
    # 20,000 draws over 256 values: missing one has odds about 256 * e**-78.
    seen = Counter(random_id(8) for _ in range(20_000))
    assert len(seen) == 256
    # and no value is wildly over-represented (mean 78; 200 is > 13 sigma away)
    assert max(seen.values()) < 200
    # the top bit of 63-bit ids is set about half the time
    top = sum(random_id(63) >> 62 for _ in range(4000))
    assert 1600 < top < 2400


def test_random_id_does_not_follow_the_random_module() -> None:
    random.seed(1234)
    first = random_id()
    random.seed(1234)
    assert random_id() != first  # equal by chance: 2**-63
    state = random.getstate()
    random_id()
    assert random.getstate() == state  # the shared Mersenne Twister is not touched


@pytest.mark.parametrize("bits", [0, -1, 1025])
def test_random_id_refuses_impossible_widths(bits: int) -> None:
    with pytest.raises(ValueError):
        random_id(bits)


@pytest.mark.parametrize("bits", [1.5, "63", True])
def test_random_id_refuses_non_integer_widths(bits: object) -> None:
    with pytest.raises(TypeError):
        random_id(bits)  # type: ignore[arg-type]


def test_request_ids_never_repeat_within_the_window() -> None:
    # 4-bit ids with a window of 8: repeats are certain without the window.
    ids = RequestIds(bits=4, window=8)
    recent: deque[int] = deque(maxlen=8)
    draws = list(itertools.islice(ids, 5000))
    for x in draws:
        assert 0 <= x < 16
        assert x not in recent
        recent.append(x)
    assert set(draws) == set(range(16))  # still random over the whole space


def test_request_ids_without_window_may_repeat() -> None:
    ids = RequestIds(bits=2, window=0)
    draws = [next(ids) for _ in range(200)]
    assert any(a == b for a, b in itertools.pairwise(draws))


def test_request_ids_window_is_bounded_by_half_the_space() -> None:
    RequestIds(bits=4, window=8)
    with pytest.raises(ValueError):
        RequestIds(bits=4, window=9)
    with pytest.raises(ValueError):
        RequestIds(window=-1)
    with pytest.raises(ValueError):
        RequestIds(bits=0)
    ids = RequestIds(bits=16, window=100)
    assert (ids.bits, ids.window) == (16, 100)
    assert repr(ids) == "RequestIds(bits=16, window=100)"
    assert iter(ids) is ids


def test_request_ids_memory_is_bounded_by_the_window() -> None:
    ids = RequestIds(bits=63, window=50)
    for _ in range(10_000):
        next(ids)
    assert len(ids._recent) == 50


async def test_many_concurrent_requests_with_random_ids_never_collide() -> None:
    # 16-bit ids, 300 in flight at once: without the window a birthday collision
    # (and a DuplicateKeyError) has even odds; with it, none can happen.
    adapter = IdPrefixAdapter()
    # (no congestion window: all 300 pending at once, none waiting for it)
    client, server = await aiodisp.open_memory_pair(adapter, congestion=False)
    received: list[aiodisp.Received[IdMessage]] = []
    all_in = asyncio.Event()

    async def collect() -> None:
        async for r in server:
            received.append(r)
            if len(received) == 300:
                all_in.set()

    collecting = asyncio.create_task(collect())
    ids = RequestIds(bits=16, window=512)
    async with client, server:
        calls = [
            asyncio.create_task(
                client.request(IdMessage(next(ids), b"q"), server.local_addr, timeout=30)
            )
            for _ in range(300)
        ]
        await asyncio.wait_for(all_in.wait(), 30)
        assert client.pending == 300
        for r in received:
            await server.notify_unreliable(r.msg._replace(reply=True), r.addr)
        replies = await asyncio.gather(*calls)
        assert sorted(r.id for r in replies) == sorted(r.msg.id for r in received)
    await collecting

