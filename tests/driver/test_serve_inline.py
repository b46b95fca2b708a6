"""serve() with a plain-function handler: called from the receive path, no task per message."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest

import aiodisp
from aiodisp import Framing
from aiodisp._serve import Server, ServeStats
from aiodisp.adapters import IdMessage, IdPrefixAdapter

pytestmark = pytest.mark.both_loops

ADAPTER = IdPrefixAdapter()
FAST = aiodisp.RetryPolicy(initial_timeout=0.02, max_attempts=50, max_interval=0.1)


def echo(msg: IdMessage, addr: Any) -> IdMessage:
    return ADAPTER.make_reply(msg, msg.payload)


async def wait_until(cond: Any, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not cond():
            await asyncio.sleep(0.001)


@pytest.mark.parametrize("framing", ["ack", "raw"])
async def test_plain_handler_answers_requests_over_udp(framing: Framing) -> None:
    server = await aiodisp.open_udp(ADAPTER, framing=framing)
    client = await aiodisp.open_udp(ADAPTER, framing=framing)
    srv = Server(server, echo)
    running = asyncio.create_task(srv.run())
    async with client:
        replies = await asyncio.gather(
            *(client.request(IdMessage(i, b"p%d" % i), server.local_addr, retry=FAST)
              for i in range(500))
        )
    assert replies == [IdMessage(i, b"p%d" % i, True) for i in range(500)]
    await server.close()
    stats = await running
    assert stats.handled == stats.replied >= 500
    assert stats.errors == stats.send_errors == stats.in_flight == 0


async def test_plain_handler_runs_in_the_receive_callback_not_in_a_task() -> None:
    a, b = await aiodisp.open_memory_pair(ADAPTER)
    tasks_seen: list[asyncio.Task[Any] | None] = []

    def handler(msg: IdMessage, addr: Any) -> IdMessage:
        tasks_seen.append(asyncio.current_task())
        return echo(msg, addr)

    running = asyncio.create_task(b.serve(handler))
    async with a, b:
        for i in range(20):
            assert await a.request(IdMessage(i, b"x"), b.local_addr) == IdMessage(i, b"x", True)
    await running
    assert tasks_seen == [None] * 20


async def test_messages_queued_before_serving_are_handled_first_in_order() -> None:
    a, b = await aiodisp.open_memory_pair(ADAPTER)
    order: list[int] = []

    def handler(msg: IdMessage, addr: Any) -> None:
        order.append(msg.id)

    async with a, b:
        for i in range(10):
            await a.notify(IdMessage(i), b.local_addr)
        assert b.queued == 10
        running = asyncio.create_task(b.serve(handler))
        await wait_until(lambda: len(order) == 10)
        assert b.queued == 0
        await a.notify(IdMessage(10), b.local_addr)
        await wait_until(lambda: len(order) == 11)
    await running
    assert order == list(range(11))
    assert b.stats.consumed == 11


async def test_handler_errors_and_unsendable_replies_are_counted_and_serving_goes_on() -> None:
    a, b = await aiodisp.open_memory_pair(ADAPTER)
    errors: list[BaseException] = []

    def handler(msg: IdMessage, addr: Any) -> Any:
        if msg.id == 1:
            raise ValueError("no ones")
        if msg.id == 2:
            return "not a message"  # the adapter cannot encode it
        if msg.id == 3:
            return None
        return echo(msg, addr)

    srv = Server(b, handler, on_error=lambda exc, msg, addr: errors.append(exc))
    running = asyncio.create_task(srv.run())
    async with a:
        for i in (1, 2, 3):
            with pytest.raises(aiodisp.RequestTimeout):
                await a.request(IdMessage(i), b.local_addr, timeout=0.1)
        assert await a.request(IdMessage(4), b.local_addr) == IdMessage(4, b"", True)
    await b.close()
    stats = await running
    assert stats == ServeStats(handled=4, replied=1, errors=1, send_errors=1)
    assert [type(e) for e in errors] == [ValueError, aiodisp.AdapterError]


async def test_a_plain_function_returning_a_coroutine_switches_to_tasks() -> None:
    a, b = await aiodisp.open_memory_pair(ADAPTER)
    tasks_seen: list[bool] = []

    async def slow_echo(msg: IdMessage, addr: Any) -> IdMessage:
        tasks_seen.append(asyncio.current_task() is not None)
        await asyncio.sleep(0.001)
        return echo(msg, addr)

    def handler(msg: IdMessage, addr: Any) -> Any:
        return slow_echo(msg, addr)  # not a coroutine function, yet returns a coroutine

    srv = Server(b, handler, concurrency=4)
    running = asyncio.create_task(srv.run())
    async with a:
        replies = await asyncio.gather(*(a.request(IdMessage(i), b.local_addr)
                                         for i in range(40)))
    assert replies == [IdMessage(i, b"", True) for i in range(40)]
    await b.close()
    stats = await running
    assert stats == ServeStats(handled=40, replied=40)
    assert tasks_seen == [True] * 40


async def test_an_object_with_an_async_call_method_is_a_coroutine_handler() -> None:
    a, b = await aiodisp.open_memory_pair(ADAPTER)

    class Handler:
        def __init__(self) -> None:
            self.in_task: list[bool] = []

        async def __call__(self, msg: IdMessage, addr: Any) -> IdMessage:
            self.in_task.append(asyncio.current_task() is not None)
            return echo(msg, addr)

    handler = Handler()
    running = asyncio.create_task(b.serve(handler))
    async with a, b:
        assert await a.request(IdMessage(7), b.local_addr) == IdMessage(7, b"", True)
    await running
    assert handler.in_task == [True]


async def test_cancelling_inline_serving_gives_messages_back_to_the_queue() -> None:
    a, b = await aiodisp.open_memory_pair(ADAPTER)
    handled: list[int] = []
    running = asyncio.create_task(b.serve(lambda msg, addr: handled.append(msg.id)))
    async with a, b:
        await a.notify(IdMessage(1), b.local_addr)
        await wait_until(lambda: handled == [1])
        # a reader gets nothing while the handler takes every message
        reader = asyncio.create_task(b.recv_from(timeout=5))
        await a.notify(IdMessage(2), b.local_addr)
        await wait_until(lambda: handled == [1, 2])
        assert not reader.done()
        running.cancel()
        with pytest.raises(asyncio.CancelledError):
            await running
        await a.notify(IdMessage(3), b.local_addr)
        received = await reader
        assert received.msg == IdMessage(3) and handled == [1, 2]
        # serving again takes over again
        running = asyncio.create_task(b.serve(lambda msg, addr: handled.append(msg.id)))
        await a.notify(IdMessage(4), b.local_addr)
        await wait_until(lambda: handled == [1, 2, 4])
    await running


async def test_one_inline_server_per_dispatcher() -> None:
    a, b = await aiodisp.open_memory_pair(ADAPTER)
    async with a, b:
        first = asyncio.create_task(b.serve(echo))
        await asyncio.sleep(0)
        with pytest.raises(RuntimeError, match="already"):
            await b.serve(echo)
        first.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await first


async def test_retransmitted_requests_run_a_plain_handler_once_over_a_lossy_link() -> None:
    link = aiodisp.Link(loss=0.2, duplicate=0.2, reorder=0.1, seed=11)
    # (about the handler, not the rate: no window and no retry budget under 20 % loss)
    a, b = await aiodisp.open_memory_pair(ADAPTER, link=link, congestion=False,
                                          retry_budget=None)
    calls: dict[int, int] = {}

    def handler(msg: IdMessage, addr: Any) -> IdMessage:
        calls[msg.id] = calls.get(msg.id, 0) + 1
        return echo(msg, addr)

    running = asyncio.create_task(b.serve(handler))
    async with a, b:
        replies = await asyncio.gather(
            *(a.request(IdMessage(i), b.local_addr, retry=FAST, timeout=5) for i in range(300))
        )
        assert replies == [IdMessage(i, b"", True) for i in range(300)]
        assert b.stats.duplicates > 0  # retransmissions and copies came, and were dropped
    await running
    assert calls == {i: 1 for i in range(300)}


async def test_serving_a_closed_dispatcher_inline_returns_at_once() -> None:
    a, b = await aiodisp.open_memory_pair(ADAPTER)
    await a.close()
    await b.close()
    assert await Server(b, echo).run() == ServeStats()


async def test_a_reply_the_transport_cannot_send_is_counted(tmp_path: Any) -> None:
    import os
    import socket

    server = await aiodisp.open_unix(ADAPTER, str(tmp_path / "server.sock"), framing="raw")
    errors: list[BaseException] = []
    srv = Server(server, echo, on_error=lambda exc, msg, addr: errors.append(exc))
    running = asyncio.create_task(srv.run())
    await asyncio.sleep(0)
    path = str(tmp_path / "gone.sock")
    peer = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    peer.bind(path)
    peer.sendto(ADAPTER.msg_to_raw(IdMessage(1, b"x")), server.local_addr)
    peer.close()
    os.unlink(path)  # the reply has nowhere to go
    await wait_until(lambda: srv.stats.handled == 1)
    await server.close()
    stats = await running
    assert (stats.handled, stats.replied, stats.send_errors) == (1, 0, 1)
    assert len(errors) == 1 and isinstance(errors[0], aiodisp.TransportError)
