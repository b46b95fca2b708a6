"""The window and the retry budget as a dispatcher's caller sees them."""

from __future__ import annotations

import asyncio
import collections
from typing import Any

import pytest

import aiodisp
from aiodisp._core.congestion import INITIAL_WINDOW
from aiodisp.retry import ADAPTIVE
from tests.helpers.adapters import FlagAdapter, KeyAdapter
from tests.helpers.servers import echo_server, silent_udp
from tests.helpers.two_layer import TwoLayerAdapter

pytestmark = pytest.mark.both_loops


async def test_calls_past_the_window_wait_first_come_first_served() -> None:
    """50 requests at once: ten go out, the rest wait; the server sees them in call order,
    and never more calls are in flight than the window allows."""
    a, b = await aiodisp.open_memory_pair(KeyAdapter(), link=aiodisp.Link(delay=0.005))
    order: list[int] = []
    in_flight: list[tuple[int, int | None]] = []

    async def server() -> None:
        async for msg, _size, addr in b:
            order.append(msg[0])
            in_flight.append((a.pending, a.window(b.local_addr)))
            await b.notify_unreliable(msg, addr)

    task = asyncio.create_task(server())
    async with a, b:
        assert a.window(b.local_addr) == INITIAL_WINDOW == 10
        replies = await asyncio.gather(
            *(a.request((i, b""), b.local_addr, timeout=5) for i in range(50))
        )
        assert [r[0] for r in replies] == list(range(50))
        assert order == list(range(50))
        assert all(n <= (w or 0) for n, w in in_flight)
        assert max(n for n, _ in in_flight) >= 10
    await task


async def test_the_window_grows_while_it_is_used_and_not_otherwise() -> None:
    a, b = await aiodisp.open_memory_pair(KeyAdapter())
    task = asyncio.create_task(echo_server(b))
    async with a, b:
        for i in range(200):  # one call at a time: the window is never full
            await a.request((i, b""), b.local_addr, timeout=5)
        assert a.window(b.local_addr) == INITIAL_WINDOW
        await asyncio.gather(
            *(a.request((1000 + i, b""), b.local_addr, timeout=5) for i in range(500))
        )
        grown = a.window(b.local_addr)
        assert grown is not None and grown > 100  # slow start, no loss
        # (no loss on the link; a stall of the loaded test machine past the 50 ms
        # minimum RTO may still send a spare copy, as it did once in a full run)
        assert a.stats.timeouts == 0 and a.stats.retransmissions <= 5
    await task


async def test_a_call_that_waits_for_the_window_past_its_timeout_says_so() -> None:
    with silent_udp() as silent:
        async with await aiodisp.open_udp(KeyAdapter(), ("127.0.0.1", 0)) as d:
            calls = [  # ten in flight until 1 s; five that wait 0.3 s for the window
                asyncio.create_task(d.request((i, b""), silent, timeout=1.0 if i < 10 else 0.3))
                for i in range(INITIAL_WINDOW + 5)
            ]
            results = await asyncio.gather(*calls, return_exceptions=True)
            errors = [r for r in results if isinstance(r, aiodisp.RequestTimeout)]
            assert len(errors) == len(calls)
            waited = collections.Counter(e.waited_for for e in errors)
            assert waited["reply"] == INITIAL_WINDOW and waited["window"] == 5
            late = next(e for e in errors if e.waited_for == "window")
            assert late.attempts == 0 and "congestion window" in str(late)
            assert d.stats.requests == INITIAL_WINDOW  # the others were never sent
            core = d._core
            assert not d._window_waiting and not core.throttled and d.pending == 0


async def test_cancelling_calls_that_wait_for_the_window_leaves_nothing_behind() -> None:
    with silent_udp() as silent:
        async with await aiodisp.open_udp(KeyAdapter(), ("127.0.0.1", 0)) as d:
            calls = [
                asyncio.create_task(d.request((i, b""), silent, timeout=10)) for i in range(300)
            ]
            for _ in range(2000):  # (the first steps resolve the address, then start)
                peer = d._core.windows.peers.get(silent)
                if peer is not None and peer.waiting == 300 - INITIAL_WINDOW:
                    break
                await asyncio.sleep(0.001)
            assert d.pending == INITIAL_WINDOW
            for t in calls[5:]:  # some in flight, most waiting
                t.cancel()
            await asyncio.sleep(0)
            # the woken waiters' turns went on: the window is full again of live calls
            for t in calls[:5]:
                t.cancel()
            await asyncio.gather(*calls, return_exceptions=True)
            peer = d._core.windows.peers[silent]
            assert peer.in_flight == 0 and peer.waiting == 0
            assert not d._window_waiting and not d._core.throttled and d.pending == 0


async def test_a_woken_waiter_that_leaves_passes_its_turn_on() -> None:
    a, b = await aiodisp.open_memory_pair(KeyAdapter(), link=aiodisp.Link(delay=0.01))
    task = asyncio.create_task(echo_server(b))
    async with a, b:
        await a.request((99, b""), b.local_addr, timeout=5)  # (the address is known now)
        first = [a.request((i, b""), b.local_addr, timeout=5) for i in range(INITIAL_WINDOW)]
        running = [asyncio.create_task(c) for c in first]
        await asyncio.sleep(0)
        doomed = asyncio.create_task(a.request((100, b""), b.local_addr, timeout=5))
        later = asyncio.create_task(a.request((101, b""), b.local_addr, timeout=5))
        await asyncio.sleep(0)
        assert a.pending == INITIAL_WINDOW  # both wait
        await asyncio.gather(*running)  # room: the first waiter is woken ...
        doomed.cancel()  # ... and leaves before it starts
        assert (await later)[0] == 101
        with pytest.raises(asyncio.CancelledError):
            await doomed
    await task


async def test_congestion_false_has_no_window() -> None:
    with silent_udp() as silent:
        async with await aiodisp.open_udp(
            KeyAdapter(), ("127.0.0.1", 0), congestion=False
        ) as d:
            assert d.window(silent) is None
            calls = [
                asyncio.create_task(d.request((i, b""), silent, timeout=5)) for i in range(100)
            ]
            await asyncio.sleep(0.05)
            assert d.pending == 100
            for t in calls:
                t.cancel()
            await asyncio.gather(*calls, return_exceptions=True)


async def test_request_retransmits_by_default_over_ack_framing_only() -> None:
    with silent_udp() as silent:
        async with await aiodisp.open_udp(KeyAdapter(), ("127.0.0.1", 0)) as d:
            assert d._retry is ADAPTIVE
            with pytest.raises(aiodisp.RequestTimeout) as info:
                await d.request((1, b""), silent, timeout=0.6)
            assert info.value.attempts >= 2
        async with await aiodisp.open_udp(FlagAdapter(), ("127.0.0.1", 0), framing="raw") as d:
            assert d._retry is None
            with pytest.raises(aiodisp.RequestTimeout) as info:
                await d.request((1, b"", False), silent, timeout=0.3)
            assert info.value.attempts == 1
            policy = aiodisp.RetryPolicy(max_attempts=1)
        async with await aiodisp.open_udp(KeyAdapter(), ("127.0.0.1", 0), retry=policy) as d:
            with pytest.raises(aiodisp.RequestTimeout) as info:
                await d.request((1, b""), silent, timeout=0.3)
            assert info.value.attempts == 1


async def test_a_retransmission_the_budget_refuses_is_not_sent_and_the_call_waits() -> None:
    budget = aiodisp.RetryBudget(ratio=0.0, min_per_second=0.1)  # one retransmission per 10 s
    policy = aiodisp.RetryPolicy(initial_timeout=0.02, max_attempts=None, jitter=0.0)
    with silent_udp() as silent:
        async with await aiodisp.open_udp(  # (no window: its probes would space the retries)
            KeyAdapter(), ("127.0.0.1", 0), retry_budget=budget, retry=policy, congestion=False
        ) as d:
            loop = asyncio.get_running_loop()
            start = loop.time()
            with pytest.raises(aiodisp.RequestTimeout) as info:
                await d.request((1, b""), silent, timeout=0.5)
            assert loop.time() - start >= 0.45  # it waited for its timeout
            assert info.value.attempts == 2  # the first send and the one allowed
            assert d.stats.retransmissions == 1 and d.stats.budget_denied >= 2


async def test_without_a_budget_retransmissions_are_not_counted_against_one() -> None:
    policy = aiodisp.RetryPolicy(initial_timeout=0.02, max_attempts=None, max_interval=0.02)
    with silent_udp() as silent:
        async with await aiodisp.open_udp(
            KeyAdapter(), ("127.0.0.1", 0), retry_budget=None, congestion=False, retry=policy
        ) as d:
            with pytest.raises(aiodisp.RequestTimeout):
                await d.request((1, b""), silent, timeout=0.5)
            assert d.stats.retransmissions >= 10 and d.stats.budget_denied == 0


@pytest.mark.parametrize("bad", [0.2, "budget", aiodisp.RetryPolicy()])
async def test_retry_budget_must_be_a_retry_budget_or_none(bad: Any) -> None:
    with pytest.raises(TypeError):
        await aiodisp.open_memory_pair(KeyAdapter(), retry_budget=bad)


async def test_a_lossy_link_with_every_default_still_delivers_each_notify_once() -> None:
    link = aiodisp.Link(loss=0.05, duplicate=0.05, reorder=0.05, delay=0.002, seed=5)
    a, b = await aiodisp.open_memory_pair(KeyAdapter(), link=link)
    seen: collections.Counter[int] = collections.Counter()

    async def reader() -> None:
        async for msg, _size, _addr in b:
            seen[msg[0]] += 1

    task = asyncio.create_task(reader())
    async with a, b:
        await asyncio.gather(*(a.notify((i, b""), b.local_addr, timeout=20) for i in range(300)))
        await asyncio.sleep(0.05)
        assert set(seen) == set(range(300)) and max(seen.values()) == 1
        assert a.stats.retransmissions > 0 and a.stats.timeouts == 0
        window = a.window(b.local_addr)
        assert window is not None and window >= 1
    await task


async def test_calls_of_an_adapters_message_layer_leave_the_window_too() -> None:
    """Raw framing with classify/transaction_key: a request answered after its ACK
    and a notify ACKed give their place back."""
    adapter = TwoLayerAdapter()
    a, b = await aiodisp.open_memory_pair(adapter, framing="raw")

    async def server() -> None:
        async for (_kind, _tx, key, payload), _size, addr in b:
            if payload != b"note":
                await b.notify_unreliable(("R", None, key, payload), addr)

    task = asyncio.create_task(server())
    async with a, b:
        await asyncio.gather(
            *(a.request(("M", i, i, b"q"), b.local_addr, timeout=5) for i in range(40)),
            *(a.notify(("M", 100 + i, 100 + i, b"note"), b.local_addr, timeout=5)
              for i in range(40)),
        )
        peer = a._core.windows.peers[b.local_addr]
        assert peer.in_flight == 0 and not a._core.throttled and a.pending == 0
    await task


def test_the_blocking_facade_gets_the_same_defaults() -> None:
    import aiodisp.sync

    with aiodisp.sync.open_udp(KeyAdapter()) as s:
        assert s.local_addr[0] in ("::", "0.0.0.0")  # the wildcard
        d = s.dispatcher
        assert d._retry is ADAPTIVE and d._core.budget == aiodisp.RetryBudget()
        assert s.window(("127.0.0.1", 9)) == INITIAL_WINDOW
        rcv, snd = d.transport.buffer_sizes  # type: ignore[attr-defined]
        assert rcv >= 2 * min(4 << 20, 212992) and snd >= 2 * min(4 << 20, 212992)


async def test_a_request_whose_key_is_pending_fails_at_once_even_past_the_window() -> None:
    with silent_udp() as silent:
        async with await aiodisp.open_udp(KeyAdapter(), ("127.0.0.1", 0)) as d:
            calls = [asyncio.create_task(d.request((i, b""), silent, timeout=5))
                     for i in range(INITIAL_WINDOW)]
            await asyncio.sleep(0.01)
            assert silent in d._core.throttled
            with pytest.raises(aiodisp.DuplicateKeyError):  # not after a 5 s wait
                await asyncio.wait_for(d.request((3, b""), silent, timeout=5), 1.0)
            for t in calls:
                t.cancel()
            await asyncio.gather(*calls, return_exceptions=True)
