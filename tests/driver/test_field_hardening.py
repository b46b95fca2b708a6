"""Issue 11, the driver's side: each way a real peer, a path or a careless caller broke a
dispatcher, on both loops. (The transports' side is in tests/transports/.)"""

from __future__ import annotations

import asyncio
import gc
import math
import socket
import struct
from pathlib import Path
from typing import Any

import pytest

import aiodisp
from aiodisp.adapters import IdMessage, IdPrefixAdapter
from tests.helpers.carriers import ScriptedCarrier
from tests.helpers.flood import settle

pytestmark = pytest.mark.both_loops

ADAPTER = IdPrefixAdapter()
LOOPBACK = ("127.0.0.1", 0)


def silent_port() -> tuple[socket.socket, Any]:
    """A bound UDP socket that never answers (no ICMP either: it exists)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    return sock, sock.getsockname()


@pytest.mark.parametrize(("timeout", "error"), [(math.nan, ValueError), (-1, ValueError),
                                                (math.inf, ValueError), ("1", TypeError)])
async def test_a_bad_timeout_is_refused_and_timers_keep_working(
    timeout: Any, error: type[Exception]
) -> None:
    """uvloop's call_at(nan) used to break every later timeout of the dispatcher."""
    sock, dest = silent_port()
    with sock:
        async with await aiodisp.open_udp(ADAPTER, LOOPBACK) as d:
            for call in (
                lambda: d.request(IdMessage(1), dest, timeout=timeout),
                lambda: d.notify(IdMessage(2), dest, timeout=timeout),
                lambda: d.recv_from(timeout=timeout),
                lambda: d.notify_unreliable(IdMessage(3), dest, timeout=timeout),
            ):
                with pytest.raises(error, match="timeout must be None or"):
                    await call()
            assert d.stats.sent == 0
            with pytest.raises(aiodisp.RequestTimeout):
                await d.request(IdMessage(4), dest, timeout=0.05)


class SlowResolver(ScriptedCarrier):
    """A carrier whose name look-up takes ``delay`` seconds (no slow resolver runs here)."""

    def __init__(self, delay: float) -> None:
        super().__init__()
        self.delay = delay

    async def resolve(self, addr: Any) -> Any:
        await asyncio.sleep(self.delay)
        return addr


async def test_name_resolution_counts_inside_the_calls_timeout() -> None:
    d = aiodisp.Dispatcher(SlowResolver(2.0), ADAPTER)
    async with d:
        loop = asyncio.get_running_loop()
        start = loop.time()
        with pytest.raises(aiodisp.RequestTimeout) as caught:
            await d.request(IdMessage(1), "slow.example", timeout=0.2)
        assert loop.time() - start < 1.0  # not 2 s of look-up plus the timeout
        assert caught.value.waited_for == "address" and caught.value.addr == "slow.example"


async def test_close_interrupts_a_name_resolution() -> None:
    d = aiodisp.Dispatcher(SlowResolver(5.0), ADAPTER)
    calls = [asyncio.create_task(d.request(IdMessage(i), "slow.example", timeout=10))
             for i in range(3)]
    await asyncio.sleep(0.05)
    loop = asyncio.get_running_loop()
    start = loop.time()
    await d.close()
    for call in calls:
        with pytest.raises(aiodisp.DispatcherClosed):
            await call
    assert loop.time() - start < 1.0


async def test_a_plain_handler_sometimes_returning_an_awaitable_keeps_its_plain_replies() -> None:
    async def later(msg: IdMessage) -> IdMessage:
        await asyncio.sleep(0)
        return ADAPTER.make_reply(msg, b"later")

    def handler(msg: IdMessage, _addr: Any) -> Any:
        return later(msg) if msg.id == 1 else ADAPTER.make_reply(msg, b"now")

    async with await aiodisp.open_udp(ADAPTER, LOOPBACK) as server, \
            await aiodisp.open_udp(ADAPTER, LOOPBACK) as client:
        srv = aiodisp.Server(server, handler)
        running = asyncio.create_task(srv.run())
        to = server.local_addr
        assert (await client.request(IdMessage(0), to, timeout=2)).payload == b"now"
        assert (await client.request(IdMessage(1), to, timeout=2)).payload == b"later"
        for i in range(2, 6):  # plain replies after the first awaitable still go out
            reply = await client.request(IdMessage(i), server.local_addr, timeout=2)
            assert reply.payload == b"now"
        assert srv.stats.errors == 0 and srv.stats.send_errors == 0
    await running


async def test_a_plain_handler_raising_cancelled_error_does_not_end_the_loop() -> None:
    def handler(msg: IdMessage, _addr: Any) -> IdMessage:
        if msg.id == 1:
            raise asyncio.CancelledError  # the handler's own, not the loop's
        return ADAPTER.make_reply(msg, b"ok")

    async with await aiodisp.open_udp(ADAPTER, LOOPBACK) as server, \
            await aiodisp.open_udp(ADAPTER, LOOPBACK) as client:
        srv = aiodisp.Server(server, handler)
        running = asyncio.create_task(srv.run())
        with pytest.raises(aiodisp.RequestTimeout):
            await client.request(IdMessage(1), server.local_addr, timeout=0.2)
        assert (await client.request(IdMessage(2), server.local_addr, timeout=2)).payload == b"ok"
        assert srv.stats.errors == 1
    await running


async def test_closing_or_timing_out_while_blocked_on_send_room_leaves_no_unretrieved_future(
) -> None:
    loop = asyncio.get_running_loop()
    complaints: list[dict[str, Any]] = []
    old = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: complaints.append(context))
    try:
        carrier = ScriptedCarrier()
        d = aiodisp.Dispatcher(carrier, ADAPTER)
        carrier.mode = "blocked"
        with pytest.raises(aiodisp.RequestTimeout):
            await d.request(IdMessage(1), "peer", timeout=0.05)
        waiting = [asyncio.create_task(d.notify(IdMessage(i), "peer", timeout=5))
                   for i in range(2, 5)]
        await asyncio.sleep(0.02)
        await d.close()
        for task in waiting:
            with pytest.raises(aiodisp.DispatcherClosed):
                await task
        del waiting, task
        gc.collect()
        await asyncio.sleep(0.01)
    finally:
        loop.set_exception_handler(old)
    assert complaints == []


@pytest.mark.parametrize("coalesce", [False, True])
async def test_a_datagram_from_an_unbound_unix_socket_breaks_nothing(
    tmp_path: Path, coalesce: bool
) -> None:
    """It cannot be ACKed or answered: counted, and every other peer is still served."""
    path = tmp_path / "server.sock"
    async with await aiodisp.open_unix(ADAPTER, path, coalesce=coalesce) as server, \
            await aiodisp.open_unix(ADAPTER, tmp_path / "client.sock") as client:
        serving = asyncio.create_task(server.serve(lambda m, _a: ADAPTER.make_reply(m, b"r")))
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as unbound:
            for i in range(3):  # requests an ACK, wants a reply: neither can go back
                frame = struct.pack(">Q", (0x01 << 56) | (i + 1)) + ADAPTER.msg_to_raw(
                    IdMessage(100 + i, b"who am I"))
                unbound.sendto(frame, str(path))
        await settle(lambda: server.stats.received >= 3)
        assert (await client.request(IdMessage(1), server.local_addr, timeout=2)).payload == b"r"
        with pytest.raises(aiodisp.RequestTimeout):  # expired calls still fail on time
            await server.request(IdMessage(5), client.local_addr, timeout=0.05)
        # each datagram to it fails and is counted; coalesced, its ACKs and replies
        # travel (and fail) together
        assert server.stats.transport_errors >= (1 if coalesce else 3)
    await serving


async def test_an_unawaited_notify_unreliable_warns_under_its_public_name() -> None:
    async with await aiodisp.open_udp(ADAPTER, LOOPBACK) as d:
        with pytest.warns(RuntimeWarning, match="Dispatcher.notify_unreliable' was never awaited"):
            d.notify_unreliable(IdMessage(1), d.local_addr)  # type: ignore[unused-coroutine]
            gc.collect()


@pytest.mark.parametrize("addr", [["127.0.0.1", 9], ("127.0.0.1", 70000), ("127.0.0.1", -1),
                                  ("127.0.0.1",), "127.0.0.1:9", None])
async def test_every_malformed_address_gets_a_typed_error(addr: Any) -> None:
    async with await aiodisp.open_udp(ADAPTER, LOOPBACK) as d:
        for call in (lambda: d.request(IdMessage(1), addr, timeout=1),
                     lambda: d.notify_unreliable(IdMessage(1), addr)):
            with pytest.raises(aiodisp.TransportError):
                await call()
        with pytest.raises(aiodisp.TransportError):
            d.send_nowait(IdMessage(1), addr)
        assert d.pending == 0


async def test_a_unix_peer_that_stops_reading_holds_up_no_other(tmp_path: Path) -> None:
    """Its replies queue (bounded) or are dropped; every healthy peer is answered."""
    async with await aiodisp.open_unix(ADAPTER, tmp_path / "server.sock",
                                       max_queued_per_peer=64) as server:
        serving = asyncio.create_task(
            server.serve(lambda m, _a: ADAPTER.make_reply(m, b"x" * 2000)))
        silent_path = str(tmp_path / "silent.sock")
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as silent:
            silent.bind(silent_path)  # it sends, and never reads a reply
            silent.setblocking(False)
            sent = 0
            async with asyncio.timeout(20):
                while sent < 1000:
                    frame = struct.pack(">Q", sent + 1) + ADAPTER.msg_to_raw(IdMessage(sent))
                    try:
                        silent.sendto(frame, str(server.local_addr))
                    except BlockingIOError:  # the server's socket queue is full: let it read
                        await asyncio.sleep(0.001)
                        continue
                    sent += 1
            await settle(lambda: server.stats.received >= 1000)
            healthy = [await aiodisp.open_unix(ADAPTER, tmp_path / f"c{i}.sock") for i in range(5)]
            try:
                replies = await asyncio.gather(*(
                    c.request(IdMessage(10_000 + i), server.local_addr, timeout=2)
                    for i, c in enumerate(healthy)))
                assert [r.id for r in replies] == [10_000 + i for i in range(5)]
            finally:
                for c in healthy:
                    await c.close()
            transport: Any = server.transport
            assert transport.queued_for(silent_path) <= 64  # bounded, not 1,000
            assert transport.queued <= 64 + 5
    await serving
