"""A UDP transport on the event loop's own datagram transport.

Used on loops that read datagrams natively and in batches (uvloop), where
handing every datagram straight from the loop's C reader to the dispatcher is
cheaper than reading the socket from Python. Selector-based asyncio loops use
:class:`~aiodisp._transports.sockets.SocketTransport` instead: their datagram
transport reads one datagram per loop iteration. So do sockets bound to a
wildcard or an IPv4-mapped address on every loop (see
:func:`native_transport_fits`): the loop's transport cannot see the
destination address of a datagram, which a wildcard socket needs to answer
from the address it was reached at, nor convert IPv4-mapped senders.

The loop's transport reports a failed send through ``error_received``, from
inside ``sendto`` (uvloop: an unroutable destination as EINVAL or
ENETUNREACH, an oversize datagram as EMSGSIZE, no address as EDESTADDRREQ,
a firewall's refusal as EPERM); :meth:`LoopDatagramTransport.send` turns
that into a :class:`TransportError` raised at once, as
:class:`~aiodisp._transports.sockets.SocketTransport` raises, rather than a
later count of transport errors and a silent timeout for the caller.
"""

from __future__ import annotations

import asyncio
import errno
import socket
from collections.abc import Callable
from typing import Any

from ..errors import TransportError
from .addresses import is_wildcard, resolve_address, transport_error
from .base import Address, DatagramSink

__all__ = ["LoopDatagramTransport", "loop_reads_natively", "native_transport_fits"]


def loop_reads_natively(loop: asyncio.AbstractEventLoop) -> bool:
    """True for loops whose datagram transport is not asyncio's selector one."""
    return not isinstance(loop, asyncio.selector_events.BaseSelectorEventLoop)


def native_transport_fits(sock: socket.socket) -> bool:
    """True when the loop's own transport can serve ``sock`` as well as SocketTransport:
    a UDP socket bound to one specific, not IPv4-mapped, address."""
    if sock.family not in (socket.AF_INET, socket.AF_INET6):
        return False
    host = sock.getsockname()[0]
    return not (is_wildcard(host) or host.startswith("::ffff:"))


class _Protocol(asyncio.DatagramProtocol):
    owner: LoopDatagramTransport

    # Replaced by the sink's own method in LoopDatagramTransport.start(): the
    # loop then calls the dispatcher with no hop in between.
    def datagram_received(self, data: bytes, addr: Any) -> None:
        return None

    def error_received(self, exc: Exception) -> None:
        owner = self.owner
        if owner._sending:
            owner._send_failure = exc  # raised by send() once sendto returns
        else:
            owner._error(exc)

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
        self._sendto = dgram.sendto
        self._protocol = protocol
        self._max = max_datagram_size
        self._local_addr: Address = sock.getsockname()
        self._family = sock.family
        self._sink: DatagramSink | None = None
        self._paused = False
        self._sending = False
        self._send_failure: Exception | None = None
        self._writers: set[asyncio.Future[None]] = set()
        self._closed = False
        #: best-effort datagrams dropped because the loop had paused writing
        self.dropped = 0

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

    @property
    def buffer_sizes(self) -> tuple[int, int]:
        """The socket's receive and send buffers in bytes, as the kernel granted them."""
        sock = self._sock
        return (
            sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF),
            sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF),
        )

    def start(self, sink: DatagramSink) -> None:
        if self._closed:
            raise TransportError("the transport is closed")
        self._sink = sink
        self._protocol.datagram_received = sink.datagram_received  # type: ignore[method-assign]

    def send(self, data: bytes, addr: Address) -> bool:
        """Hand the datagram to the loop (which queues it if the socket is full).

        Returns True while the loop has paused writing (its buffer is past its
        high-water mark): ``await wait_writable()`` before sending more. Raises
        :class:`TransportError` at once for a datagram the kernel refused.
        """
        if self._closed:
            raise transport_error("the transport is closed", errno.EBADF)
        self._sending = True
        try:
            self._sendto(data, addr)
        except Exception as exc:  # OSError, and ValueError, TypeError, KeyError… for an address
            self._send_failure = None
            raise _send_error(addr, exc) from exc
        finally:
            self._sending = False
        failure = self._send_failure
        if failure is not None:
            self._send_failure = None
            raise _send_error(addr, failure) from failure
        return self._paused

    @property
    def fast_send(self) -> Callable[[bytes, Address], object]:
        """What the dispatcher's hot path calls: :meth:`send` itself.

        (It was the loop transport's C ``sendto``, one Python frame less, but
        uvloop reports a refused datagram through ``error_received`` from inside
        that call: only a frame around it can raise the error to the caller.)
        """
        return self.send

    def send_best_effort(self, data: bytes, addr: Address) -> bool:
        """Send a datagram its sender can lose (an ACK, a cached or inline reply).

        While the loop has paused writing it is dropped instead (False), so an
        unanswered burst cannot grow the loop's write buffer without bound.
        """
        if self._paused:
            self.dropped += 1
            return False
        self.send(data, addr)
        return True

    def _error(self, exc: Exception) -> None:
        if self._sink is not None:
            self._sink.error_received(exc)

    def _resume(self) -> None:
        self._paused = False
        writers = self._writers
        for fut in writers:
            if not fut.done():
                fut.set_result(None)

    async def wait_writable(self, addr: Address | None = None) -> None:
        """Return once the loop has resumed writing (or the transport is closed).

        ``addr`` is accepted for the interface's sake: a UDP socket's send
        buffer is one for every destination.
        """
        while self._paused and not self._closed:
            fut = self._loop.create_future()
            self._writers.add(fut)
            try:
                await fut
            finally:
                self._writers.discard(fut)

    async def resolve(self, addr: Address) -> Address:
        return await resolve_address(self._loop, self._family, addr)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._dgram.abort()
        self._resume()


def _send_error(addr: Address, exc: BaseException) -> TransportError:
    code = exc.errno if isinstance(exc, OSError) and exc.errno else errno.EINVAL
    if addr is None and code in (errno.EINVAL, errno.EDESTADDRREQ):
        return transport_error(f"{addr!r} is not an address", errno.EDESTADDRREQ)
    return transport_error(f"cannot send to {addr!r}: {exc}", code)
