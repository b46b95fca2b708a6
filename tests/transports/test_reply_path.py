"""reply_path: send_best_effort in pieces (an inline server's hot path), on both UDP
transports: ``sendto`` while ``queued`` is empty, ``failed`` doing what send_best_effort
does with the exception sendto raised."""

from __future__ import annotations

import asyncio
import errno
import socket
from typing import Any

import pytest

import aiodisp
from aiodisp._transports.loop_datagram import LoopDatagramTransport
from aiodisp.adapters import IdPrefixAdapter

pytestmark = pytest.mark.both_loops


def _peer() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(5.0)
    return sock


async def _received(sock: socket.socket) -> bytes:
    data, _ = await asyncio.get_running_loop().run_in_executor(None, sock.recvfrom, 100)
    return data


async def test_sendto_sends_and_failed_handles_what_it_raised() -> None:
    d = await aiodisp.open_udp(IdPrefixAdapter(), ("127.0.0.1", 0), framing="raw")
    peer = _peer()
    transport: Any = d.transport
    try:
        sendto, queued, failed = transport.reply_path
        assert not queued
        sendto(b"one", peer.getsockname())
        assert await _received(peer) == b"one"
        # a socket that could not take it now: the transport queues it, and it goes out
        assert failed(b"two", peer.getsockname(), OSError(errno.EAGAIN, "full")) is True
        assert await _received(peer) == b"two"
        with pytest.raises(aiodisp.TransportError) as info:
            failed(b"three", peer.getsockname(), OSError(errno.EPERM, "refused"))
        assert info.value.errno == errno.EPERM
        with pytest.raises(aiodisp.TransportError):
            failed(b"four", ("127.0.0.1", "no port"), TypeError("not an address"))
    finally:
        peer.close()
        await d.close()


async def test_queued_while_the_loop_has_paused_writing_or_the_transport_closed() -> None:
    d = await aiodisp.open_udp(IdPrefixAdapter(), ("127.0.0.1", 0), framing="raw")
    transport: Any = d.transport
    _, queued, _ = transport.reply_path
    if isinstance(transport, LoopDatagramTransport):
        transport._protocol.pause_writing()
        assert queued
        transport._protocol.resume_writing()
        assert not queued
    await d.close()
    if isinstance(transport, LoopDatagramTransport):
        assert queued  # closed: send_best_effort raises, as it says
