"""Handler-style serving: Dispatcher.serve() and aiodisp._serve.Server."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from typing import Any

import pytest

import aiodisp
from aiodisp._serve import Server, ServeStats, serve
from aiodisp.adapters import IdMessage, IdPrefixAdapter

FAST = aiodisp.RetryPolicy(initial_timeout=0.02, max_attempts=50, max_interval=0.1)


async def echo(msg: IdMessage, addr: Any) -> IdMessage:
    return msg._replace(reply=True)


async def wait_until(cond: Any, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not cond():
            await asyncio.sleep(0.001)


async def test_dispatcher_serve_answers_requests_over_udp() -> None:
    adapter = IdPrefixAdapter()
    server = await aiodisp.open_udp(adapter)
    client = await aiodisp.open_udp(adapter)
    serving = asyncio.create_task(server.serve(echo))
    async with client:
        replies = await asyncio.gather(
            *(
                client.request(IdMessage(i, b"x%d" % i), server.local_addr, retry=FAST)
                for i in range(200)
            )
        )
    assert replies == [IdMessage(i, b"x%d" % i, True) for i in range(200)]
    await server.close()
    await serving  # returns normally once the dispatcher closes
    assert serving.result() is None


async def test_run_returns_final_stats_when_the_dispatcher_closes() -> None:
    a, b = await aiodisp.open_memory_pair(IdPrefixAdapter())
    srv = Server(b, echo)
    running = asyncio.create_task(srv.run())
    async with a:
        for i in range(5):
            await a.request(IdMessage(i), b.local_addr)
    await b.close()
    stats = await running
    assert stats == ServeStats(handled=5, replied=5)
    assert srv.stats == stats


async def test_handler_returning_none_sends_nothing() -> None:
    a, b = await aiodisp.open_memory_pair(IdPrefixAdapter())
    seen: list[IdMessage] = []

    async def sink(msg: IdMessage, addr: Any) -> None:
        seen.append(msg)
        return None

    srv = Server(b, sink)
    running = asyncio.create_task(srv.run())
    async with a, b:
        with pytest.raises(aiodisp.RequestTimeout):
            await a.request(IdMessage(1, b"q"), b.local_addr, timeout=0.1)
        await a.notify(IdMessage(2, b"n"), b.local_addr)
        await wait_until(lambda: len(seen) == 2)
    await running
    assert [m.id for m in seen] == [1, 2]
    assert srv.stats.replied == 0
    assert b.stats.sent == b.stats.acks_sent  # nothing but ACKs went out


async def test_handler_exception_is_counted_logged_and_not_fatal(
    caplog: pytest.LogCaptureFixture,
) -> None:
    a, b = await aiodisp.open_memory_pair(IdPrefixAdapter())
    errors: list[tuple[BaseException, Any, Any]] = []

    async def picky(msg: IdMessage, addr: Any) -> IdMessage:
        if msg.payload == b"bad":
            raise ValueError("cannot handle this")
        return msg._replace(reply=True)

    srv = Server(b, picky, on_error=lambda exc, msg, addr: errors.append((exc, msg, addr)))
    running = asyncio.create_task(srv.run())
    with caplog.at_level(logging.ERROR, logger="aiodisp"):
        async with a, b:
            for i in range(20):
                with pytest.raises(aiodisp.RequestTimeout):
                    await a.request(IdMessage(i, b"bad"), b.local_addr, timeout=0.02)
            assert await a.request(IdMessage(99, b"ok"), b.local_addr) == IdMessage(
                99, b"ok", True
            )
        await running
    assert srv.stats.errors == 20
    assert srv.stats.replied == 1
    assert len(errors) == 20
    exc, msg, addr = errors[0]
    assert isinstance(exc, ValueError) and msg == IdMessage(0, b"bad") and addr == a.local_addr
    logged = [r for r in caplog.records if "handler raised" in r.getMessage()]
    assert 1 <= len(logged) <= 5  # rate-limited: a burst of 5 per 10 s
    assert "cannot handle this" in logged[0].getMessage()
    assert logged[0].name == "aiodisp.serve"


async def test_on_error_that_raises_does_not_stop_serving(
    caplog: pytest.LogCaptureFixture,
) -> None:
    a, b = await aiodisp.open_memory_pair(IdPrefixAdapter())

    async def boom(msg: IdMessage, addr: Any) -> IdMessage:
        if msg.id == 0:
            raise RuntimeError("handler")
        return msg._replace(reply=True)

    def bad_callback(exc: BaseException, msg: Any, addr: Any) -> None:
        raise KeyError("callback")

    srv = Server(b, boom, on_error=bad_callback)
    running = asyncio.create_task(srv.run())
    with caplog.at_level(logging.ERROR, logger="aiodisp"):
        async with a, b:
            await a.notify(IdMessage(0), b.local_addr)
            await wait_until(lambda: srv.stats.errors == 1)
            assert (await a.request(IdMessage(1), b.local_addr)).reply
        await running
    assert any("on_error raised" in r.getMessage() for r in caplog.records)


async def test_reply_that_cannot_be_encoded_counts_as_send_error() -> None:
    a, b = await aiodisp.open_memory_pair(IdPrefixAdapter())
    errors: list[BaseException] = []

    async def wrong_type(msg: IdMessage, addr: Any) -> Any:
        return "not an IdMessage"

    srv = Server(b, wrong_type, on_error=lambda exc, msg, addr: errors.append(exc))
    running = asyncio.create_task(srv.run())
    async with a, b:
        await a.notify(IdMessage(1), b.local_addr)
        await wait_until(lambda: srv.stats.send_errors == 1)
    await running
    assert srv.stats == ServeStats(handled=1, send_errors=1)
    assert isinstance(errors[0], aiodisp.AdapterError)


async def test_at_most_concurrency_handlers_run_and_reading_stops_at_the_bound() -> None:
    a, b = await aiodisp.open_memory_pair(IdPrefixAdapter(), max_queue=4)
    gate = asyncio.Event()
    running_now = 0
    peak = 0

    async def slow(msg: IdMessage, addr: Any) -> IdMessage:
        nonlocal running_now, peak
        running_now += 1
        peak = max(peak, running_now)
        try:
            await gate.wait()
        finally:
            running_now -= 1
        return msg._replace(reply=True)

    srv = Server(b, slow, concurrency=3)
    serving = asyncio.create_task(srv.run())
    async with a, b:
        for i in range(3):
            await a.notify_unreliable(IdMessage(i), b.local_addr)
        await wait_until(lambda: srv.stats.in_flight == 3)
        for i in range(3, 10):
            await a.notify_unreliable(IdMessage(i), b.local_addr)
        await wait_until(lambda: b.stats.received == 10)
        for _ in range(20):
            await asyncio.sleep(0)
        # 3 taken by handlers, 4 waiting in the queue, 3 dropped: backpressure
        assert srv.stats.handled == 3
        assert b.queued == 4
        assert b.stats.queue_drops == 3
        gate.set()
        await wait_until(lambda: srv.stats.replied == 7)
        assert peak == 3
        # the replies reach the client (as replies nobody waits for)
        await wait_until(lambda: a.stats.unknown_replies == 7)
    await serving


async def test_close_cancels_running_handlers_and_returns_normally() -> None:
    a, b = await aiodisp.open_memory_pair(IdPrefixAdapter())
    started = 0
    cleaned = 0

    async def forever(msg: IdMessage, addr: Any) -> IdMessage:
        nonlocal started, cleaned
        started += 1
        try:
            await asyncio.Event().wait()
        finally:
            cleaned += 1
        raise AssertionError("unreachable")

    srv = Server(b, forever)
    serving = asyncio.create_task(srv.run())
    async with a:
        for i in range(5):
            await a.notify(IdMessage(i), b.local_addr)
        await wait_until(lambda: started == 5)
        await b.close()
        stats = await serving
    assert cleaned == 5
    assert stats.cancelled == 5 and stats.in_flight == 0 and stats.errors == 0


async def test_cancelling_serve_cancels_handlers_and_reraises() -> None:
    a, b = await aiodisp.open_memory_pair(IdPrefixAdapter())
    cleaned = 0
    started = asyncio.Event()

    async def forever(msg: IdMessage, addr: Any) -> None:
        nonlocal cleaned
        started.set()
        try:
            await asyncio.Event().wait()
        finally:
            cleaned += 1

    serving = asyncio.create_task(serve(b, forever))
    async with a, b:
        await a.notify(IdMessage(1), b.local_addr)
        await started.wait()
        serving.cancel()
        with pytest.raises(asyncio.CancelledError):
            await serving
        assert cleaned == 1
        assert not b.closed  # cancelling serve() leaves the dispatcher open
        await a.notify(IdMessage(2), b.local_addr)
        assert (await b.recv_from(timeout=1.0)).msg == IdMessage(2)


async def test_cancel_while_waiting_for_handlers_to_finish_is_not_swallowed() -> None:
    a, b = await aiodisp.open_memory_pair(IdPrefixAdapter())
    release = asyncio.Event()
    started = asyncio.Event()

    async def stubborn(msg: IdMessage, addr: Any) -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            await release.wait()  # takes its time to clean up
            raise

    serving = asyncio.create_task(serve(b, stubborn))
    async with a:
        await a.notify(IdMessage(1), b.local_addr)
        await started.wait()
        await b.close()  # serving now waits for the handler to finish
        for _ in range(5):
            await asyncio.sleep(0)
        assert not serving.done()
        serving.cancel()
        for _ in range(5):
            await asyncio.sleep(0)
        assert not serving.done()  # still waits for the handler...
        release.set()
        with pytest.raises(asyncio.CancelledError):  # ...then re-raises the cancel
            await serving


async def test_retransmitted_request_runs_the_handler_once() -> None:
    link = aiodisp.Link(loss=0.3, duplicate=0.2, reorder=0.2, seed=11)
    # (about the handler, not the rate: no window and no retry budget under 30 % loss)
    a, b = await aiodisp.open_memory_pair(
        IdPrefixAdapter(), link=link, congestion=False, retry_budget=None
    )
    calls: Counter[int] = Counter()

    async def counting(msg: IdMessage, addr: Any) -> IdMessage:
        calls[msg.id] += 1
        return msg._replace(reply=True)

    serving = asyncio.create_task(b.serve(counting, concurrency=8))
    async with a, b:
        replies = await asyncio.gather(
            *(a.request(IdMessage(i), b.local_addr, retry=FAST) for i in range(100))
        )
        assert [r.id for r in replies] == list(range(100))
        assert a.stats.retransmissions > 0
        assert b.stats.replies_resent > 0
    await serving
    assert set(calls) <= set(range(100))
    assert max(calls.values()) == 1


async def test_serve_on_a_closed_dispatcher_returns_at_once() -> None:
    a, b = await aiodisp.open_memory_pair(IdPrefixAdapter())
    await a.close()
    await b.close()
    await asyncio.wait_for(a.serve(echo), 5)


async def test_invalid_concurrency_and_double_run() -> None:
    a, b = await aiodisp.open_memory_pair(IdPrefixAdapter())
    async with a, b:
        with pytest.raises(ValueError):
            await a.serve(echo, concurrency=0)
        srv = Server(b, echo)
        first = asyncio.create_task(srv.run())
        await asyncio.sleep(0)
        with pytest.raises(RuntimeError):
            await srv.run()
    await first
