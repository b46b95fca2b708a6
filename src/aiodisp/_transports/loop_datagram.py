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

ICMP errors (:mod:`.icmp`): the socket asks the kernel to queue them, and the
error handler reads the queue the moment the loop reports an error, before it
returns to the loop: uvloop's reader must not meet the queued error again (it
crashes). Each queued error goes to the sink with its peer (a port
unreachable as :class:`~aiodisp.PeerUnreachable`); a send the kernel refused
only because such an error was queued is tried once more.
"""

from __future__ import annotations

import asyncio
import errno
import socket
from collections.abc import Callable
from typing import Any

from ..errors import TransportError
from . import icmp
from .addresses import is_wildcard, resolve_address, transport_error
from .base import Address, DatagramSink

__all__ = ["LoopDatagramTransport", "loop_reads_natively", "native_transport_fits"]

#: a send the socket cannot take now
_BLOCKED = frozenset({errno.EAGAIN, errno.EWOULDBLOCK, errno.ENOBUFS})


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
    #: the owner's handler, which knows whether a send is in progress (see _sender)
    on_error: Callable[[Exception], None]

    # Replaced by the sink's own method in LoopDatagramTransport.start(): the
    # loop then calls the dispatcher with no hop in between.
    def datagram_received(self, data: bytes, addr: Any) -> None:
        return None

    def error_received(self, exc: Exception) -> None:
        self.on_error(exc)

    def pause_writing(self) -> None:
        self.owner._pause()

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
        #: not empty while the loop has paused writing or the transport is closed
        #: (reply_path's ``queued``)
        self._blocked: list[bool] = []
        self._send, self._best_effort, protocol.on_error = _sender(self)
        self._writers: set[asyncio.Future[None]] = set()
        self._closed = False
        #: best-effort datagrams dropped because the loop had paused writing
        self.dropped = 0

    @classmethod
    async def open(cls, sock: socket.socket, *, max_datagram_size: int) -> LoopDatagramTransport:
        loop = asyncio.get_running_loop()
        icmp.enable(sock)
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

    def sink_changed(self) -> None:
        """The sink's ``datagram_received`` was replaced (an inline server's direct
        receiver): the loop calls the new one from now on."""
        if self._sink is not None and not self._closed:
            self._protocol.datagram_received = self._sink.datagram_received  # type: ignore[method-assign]

    def send(self, data: bytes, addr: Address) -> bool:
        """Hand the datagram to the loop (which queues it if the socket is full).

        Returns True while the loop has paused writing (its buffer is past its
        high-water mark): ``await wait_writable()`` before sending more. Raises
        :class:`TransportError` at once for a datagram the kernel refused.
        """
        return self._send(data, addr)

    @property
    def fast_send(self) -> Callable[[bytes, Address], bool]:
        """What the dispatcher's hot path calls: :meth:`send` without the method hop.

        (It was the loop transport's C ``sendto``, one Python frame less, but
        uvloop reports a refused datagram through ``error_received`` from inside
        that call: only a frame around it can raise the error to the caller.
        Measured with callgrind: ~560 instructions more per request for a uvloop
        client, ~860 for a server, of 44,000 and 29,000.)
        """
        return self._send

    @property
    def send_best_effort(self) -> Callable[[bytes, Address], bool]:
        """Send a datagram its sender can lose (an ACK, a cached or inline reply).

        While the loop has paused writing it is dropped instead (False), so an
        unanswered burst cannot grow the loop's write buffer without bound;
        otherwise it is sent as :meth:`send` sends (True). A property returning
        the sending function itself: one Python frame per datagram, not two.
        """
        return self._best_effort

    @property
    def reply_path(
        self,
    ) -> tuple[
        Callable[[bytes, Address], object], list[bool], Callable[[bytes, Address, Exception], bool]
    ]:
        """:attr:`send_best_effort` in pieces, for a server's hot path: ``(sendto, queued,
        failed)``, as :attr:`SocketTransport.reply_path
        <aiodisp._transports.sockets.SocketTransport.reply_path>`.

        While ``queued`` is empty (the loop has not paused writing, the transport
        is open), ``sendto`` is the socket's own: the loop's transport is bypassed
        (its ``sendto`` copies a context per datagram, and a refusal comes back
        through ``error_received`` only a frame around it can catch: see
        :attr:`fast_send`). Datagrams the loop still buffers may then leave after
        this one: UDP promises no order. When it raises, ``failed(data, addr,
        exc)`` hands a datagram the socket cannot take now (EAGAIN) to
        :attr:`send_best_effort` (the loop queues it), reads the socket's ICMP
        error queue and sends once more if the refusal was an earlier datagram's,
        else raises its TransportError.
        """
        return self._sock.sendto, self._blocked, self._reply_failed

    def _reply_failed(self, data: bytes, addr: Address, exc: Exception) -> bool:
        if isinstance(exc, OSError) and not self._closed:
            if exc.errno in _BLOCKED:
                return self._best_effort(data, addr)
            errors = icmp.drain(self._sock)
            for error in errors:
                self._error(error)
            if errors:
                return self._best_effort(data, addr)
        raise _send_error(addr, exc) from exc

    def _error(self, exc: Exception) -> None:
        if self._sink is not None:
            self._sink.error_received(exc)

    def _pause(self) -> None:
        self._paused = True
        if not self._blocked:
            self._blocked.append(True)

    def _resume(self) -> None:
        self._paused = False
        if not self._closed:
            self._blocked.clear()
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
        self._blocked.append(True)
        self._dgram.abort()
        self._resume()


def _sender(
    owner: LoopDatagramTransport,
) -> tuple[
    Callable[[bytes, Address], bool], Callable[[bytes, Address], bool], Callable[[Exception], None]
]:
    """The owner's send, send_best_effort and its protocol's error_received, sharing
    the send in progress.

    The loop transport calls ``error_received`` from inside ``sendto`` for a
    datagram the kernel refused (and later, from its event callbacks, for
    errors of datagrams sent or received before): one that arrives while
    ``send`` is in progress is that send's failure, raised to its caller once
    ``sendto`` returns; any other goes to the sink. Closures over shared cells
    rather than attributes: this is the hot path of every request on uvloop.
    """
    sendto = owner._dgram.sendto
    sock = owner._sock
    sending = False
    failure: Exception | None = None

    def send(data: bytes, addr: Address) -> bool:
        nonlocal sending, failure
        if owner._closed:
            raise transport_error("the transport is closed", errno.EBADF)
        sending = True
        try:
            sendto(data, addr)
        except Exception as exc:  # OSError, and ValueError, TypeError, KeyError… for an address
            sending = False
            failure = None
            raise _send_error(addr, exc) from exc
        sending = False
        if failure is not None:
            refused_once(data, addr)
        return owner._paused

    def send_best_effort(data: bytes, addr: Address) -> bool:
        nonlocal sending, failure
        if owner._paused:
            owner.dropped += 1
            return False
        if owner._closed:
            raise transport_error("the transport is closed", errno.EBADF)
        sending = True
        try:
            sendto(data, addr)
        except Exception as exc:  # as in send()
            sending = False
            failure = None
            raise _send_error(addr, exc) from exc
        sending = False
        if failure is not None:
            refused_once(data, addr)
        return True

    def refused_once(data: bytes, addr: Address) -> None:
        """The kernel refused ``data``: raise why, unless only for an earlier datagram's
        queued ICMP error, in which case it is sent once more."""
        nonlocal sending, failure
        assert failure is not None
        refused, failure = failure, None
        if not isinstance(refused, OSError) or not queued_errors_read():
            raise _send_error(addr, refused) from refused
        sending = True
        try:
            sendto(data, addr)
        except Exception as exc:
            sending = False
            failure = None
            raise _send_error(addr, exc) from exc
        sending = False
        if failure is not None:
            refused, failure = failure, None
            raise _send_error(addr, refused) from refused

    def queued_errors_read() -> bool:
        """Read the socket's error queue now; report each error; True if there was one."""
        errors = icmp.drain(sock)
        for error in errors:
            owner._error(error)
        return bool(errors)

    def error_received(exc: Exception) -> None:
        nonlocal failure
        if sending:
            failure = exc  # (send() reads the error queue once sendto returns)
        elif not isinstance(exc, OSError) or owner._closed or not queued_errors_read():
            owner._error(exc)

    return send, send_best_effort, error_received


def _send_error(addr: Address, exc: BaseException) -> TransportError:
    code = exc.errno if isinstance(exc, OSError) and exc.errno else errno.EINVAL
    if addr is None and code in (errno.EINVAL, errno.EDESTADDRREQ):
        return transport_error(f"{addr!r} is not an address", errno.EDESTADDRREQ)
    return transport_error(f"cannot send to {addr!r}: {exc}", code)
