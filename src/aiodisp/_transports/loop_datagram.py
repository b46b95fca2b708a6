"""A UDP transport on the event loop's own datagram transport.

Used on loops that read datagrams natively and in batches (uvloop), where
handing every datagram straight from the loop's C reader to the dispatcher is
cheaper than reading the socket from Python. Selector-based asyncio loops use
:class:`~aiodisp._transports.sockets.SocketTransport` instead: their datagram
transport reads one datagram per loop iteration.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from typing import Any

from ..errors import TransportError
from .addresses import resolve_address
from .base import Address, DatagramSink


def loop_reads_natively(loop: asyncio.AbstractEventLoop) -> bool:
    """True for loops whose datagram transport is not asyncio's selector one."""
    return not isinstance(loop, asyncio.selector_events.BaseSelectorEventLoop)


class _Protocol(asyncio.DatagramProtocol):
    owner: LoopDatagramTransport

    # Replaced by the sink's own method in LoopDatagramTransport.start(): the
    # loop then calls the dispatcher with no hop in between.
    def datagram_received(self, data: bytes, addr: Any) -> None:
        return None

    def error_received(self, exc: Exception) -> None:
        self.owner._error(exc)

    def pause_writing(self) -> None:
        self.owner._paused = True

    def resume_writing(self) -> None:
        self.owner._resume()

    def connection_lost(self, exc: Exception | None) -> None:
        self.owner._resume()


class LoopDatagramTransport:
    """A datagram transport over ``loop.create_datagram_endpoint(sock=...)``."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        sock: socket.socket,
        dgram: asyncio.DatagramTransport,
        protocol: _Protocol,
        max_datagram_size: int,
    ) -> None:
        self._loop = loop
        self._sock = sock
        self._dgram = dgram
        self._protocol = protocol
        self._max = max_datagram_size
        self._local_addr: Address = sock.getsockname()
        self._family = sock.family
        self._sink: DatagramSink | None = None
        self._paused = False
        self._writers: list[asyncio.Future[None]] = []
        self._closed = False

    @classmethod
    async def open(cls, sock: socket.socket, *, max_datagram_size: int) -> LoopDatagramTransport:
        loop = asyncio.get_running_loop()
        protocol = _Protocol()
        dgram, _ = await loop.create_datagram_endpoint(lambda: protocol, sock=sock)
        self = cls(loop, sock, dgram, protocol, max_datagram_size)
        protocol.owner = self
        return self

    @property
    def local_addr(self) -> Address:
        return self._local_addr

    @property
    def reliable(self) -> bool:
        return False

    @property
    def max_datagram_size(self) -> int:
        return self._max

    @property
    def socket(self) -> socket.socket:
        return self._sock

    def start(self, sink: DatagramSink) -> None:
        if self._closed:
            raise TransportError("the transport is closed")
        self._sink = sink
        self._protocol.datagram_received = sink.datagram_received  # type: ignore[method-assign]

    def send(self, data: bytes, addr: Address) -> bool:
        """Hand the datagram to the loop (which queues it if the socket is full).

        The Dispatcher calls the loop transport's own ``sendto`` directly (see
        :attr:`fast_send`); this method is the general form of the same.
        """
        if self._closed:
            raise TransportError("the transport is closed")
        try:
            self._dgram.sendto(data, addr)
        except (OSError, ValueError, TypeError) as exc:
            raise TransportError(f"cannot send to {addr!r}: {exc}") from exc
        return self._paused

    @property
    def fast_send(self) -> Callable[[bytes, Address], object]:
        """The loop transport's C ``sendto``: no Python frame per datagram.

        It returns None (never "blocked": UDP leans on the loop's own buffer)
        and raises OSError for what :meth:`send` reports as TransportError.
        """
        return self._dgram.sendto

    def _error(self, exc: Exception) -> None:
        if self._sink is not None:
            self._sink.error_received(exc)

    def _resume(self) -> None:
        self._paused = False
        writers, self._writers = self._writers, []
        for fut in writers:
            if not fut.done():
                fut.set_result(None)

    async def wait_writable(self) -> None:
        while self._paused and not self._closed:
            fut = self._loop.create_future()
            self._writers.append(fut)
            await fut

    async def resolve(self, addr: Address) -> Address:
        return await resolve_address(self._loop, self._family, addr)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._dgram.abort()
        self._resume()
