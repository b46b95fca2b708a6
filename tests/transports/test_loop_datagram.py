"""The loop's own datagram transport (uvloop's) fails and pushes back as SocketTransport does."""

from __future__ import annotations

import asyncio
import errno
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest

import aiodisp
from aiodisp._transports.loop_datagram import LoopDatagramTransport, loop_reads_natively
from aiodisp._transports.sockets import SocketTransport, make_udp_socket
from tests.helpers.adapters import KeyAdapter

pytestmark = pytest.mark.both_loops

# A socket bound to 127.0.0.1 cannot send off the host: the kernel refuses at once (EINVAL).
OFF_HOST = ("192.0.2.99", 9)


class Sink:
    def __init__(self) -> None:
        self.errors: list[Exception] = []

    def datagram_received(self, data: bytes, addr: Any) -> None:
        pass

    def error_received(self, exc: Exception) -> None:
        self.errors.append(exc)


@pytest.fixture(params=["loop", "socket"])
async def transport(request: Any) -> AsyncIterator[Any]:
    """A UDP transport on 127.0.0.1 of each kind, on the test's loop."""
    sock, limit = make_udp_socket(("127.0.0.1", 0))
    t: Any
    if request.param == "loop":
        if not loop_reads_natively(asyncio.get_running_loop()):
            sock.close()
            pytest.skip("the selector loop's datagram transport is not used (SocketTransport is)")
        t = await LoopDatagramTransport.open(sock, max_datagram_size=limit)
    else:
        t = SocketTransport(sock, reliable=False, max_datagram_size=limit)
    sink = Sink()
    t.start(sink)
    t.test_sink = sink
    yield t
    t.close()


@pytest.mark.parametrize(
    ("data", "addr", "code"),
    [
        (b"x", OFF_HOST, errno.EINVAL),  # unroutable from this socket
        (b"x" * 70_000, ("127.0.0.1", 9), errno.EMSGSIZE),  # larger than any UDP datagram
        (b"x", None, errno.EDESTADDRREQ),
        (b"x", ("127.0.0.1",), errno.EINVAL),
        (b"x", "127.0.0.1:9", errno.EINVAL),
        (b"x", ("::1", 9), errno.EINVAL),  # the wrong family
        (b"x", ("127.0.0.1", [9]), errno.EINVAL),  # unhashable
        (b"x", ["127.0.0.1", 9], errno.EINVAL),
    ],
)
async def test_a_refused_send_raises_transport_error_at_once(
    transport: Any, data: bytes, addr: Any, code: int
) -> None:
    for send in (transport.send, transport.send_best_effort, getattr(
            transport, "fast_send", transport.send)):
        with pytest.raises(aiodisp.TransportError) as info:
            send(data, addr)
        assert info.value.errno == code, info.value
    await asyncio.sleep(0.01)
    assert transport.test_sink.errors == []  # raised, not reported later as well


async def test_a_request_to_an_unroutable_address_fails_at_once() -> None:
    async with await aiodisp.open_udp(KeyAdapter(), ("127.0.0.1", 0)) as client:
        loop = asyncio.get_running_loop()
        start = loop.time()
        with pytest.raises(aiodisp.TransportError, match="cannot send"):
            await client.request((1, b"x"), OFF_HOST, timeout=2)
        assert loop.time() - start < 1
        # coalesced (the default), a one-way send's failure is counted, not raised
        await client.notify_unreliable((2, b"x"), OFF_HOST)
        await asyncio.sleep(0.01)
        assert client.stats.transport_errors == 2
    async with await aiodisp.open_udp(
        KeyAdapter(), ("127.0.0.1", 0), coalesce=False
    ) as client:
        with pytest.raises(aiodisp.TransportError, match="cannot send"):
            await client.request((1, b"x"), OFF_HOST, timeout=2)
        with pytest.raises(aiodisp.TransportError):
            await client.notify_unreliable((1, b"x"), OFF_HOST)


async def test_best_effort_sends_are_dropped_while_the_loop_has_paused_writing() -> None:
    sock, limit = make_udp_socket(("127.0.0.1", 0))
    t = await LoopDatagramTransport.open(sock, max_datagram_size=limit)
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peer.bind(("127.0.0.1", 0))
    peer.setblocking(False)
    try:
        t.start(Sink())
        t._protocol.pause_writing()  # what the loop calls when its buffer passes high water
        assert t.send_best_effort(b"ack", peer.getsockname()) is False
        assert t.dropped == 1
        assert t.send(b"must go", peer.getsockname()) is True  # sent, and "blocked"
        waiting = asyncio.create_task(t.wait_writable(peer.getsockname()))
        await asyncio.sleep(0.01)
        assert not waiting.done()
        t._protocol.resume_writing()
        async with asyncio.timeout(1):
            await waiting
        assert t.send_best_effort(b"ack", peer.getsockname()) is True
        await asyncio.sleep(0.01)
        assert [peer.recv(100), peer.recv(100)] == [b"must go", b"ack"]
    finally:
        t.close()
        peer.close()


async def test_timed_out_writers_leave_the_waiting_list() -> None:
    sock, limit = make_udp_socket(("127.0.0.1", 0))
    t = await LoopDatagramTransport.open(sock, max_datagram_size=limit)
    try:
        t.start(Sink())
        t._protocol.pause_writing()
        for _ in range(100):
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.001):
                    await t.wait_writable()
        assert len(t._writers) == 0
    finally:
        t.close()


async def test_a_specific_bind_uses_the_loops_transport_a_wildcard_one_reads_the_socket() -> None:
    native = loop_reads_natively(asyncio.get_running_loop())
    async with await aiodisp.open_udp(KeyAdapter(), ("127.0.0.1", 0)) as specific, \
            await aiodisp.open_udp(KeyAdapter(), ("0.0.0.0", 0)) as wildcard:
        expected = LoopDatagramTransport if native else SocketTransport
        assert type(specific.transport) is expected
        assert type(wildcard.transport) is SocketTransport
