"""UDP and Unix-datagram transports on a non-blocking socket.

The receive side reads through ``loop.add_reader`` and drains up to ``batch``
queued datagrams per wake-up (asyncio's own datagram transport reads one per
loop iteration, one ``epoll_wait`` per datagram). Every sender is reported in
the canonical form of :mod:`.addresses` (IPv4 peers as 2-tuples on a
dual-stack socket too, Unix paths resolved).

A send the kernel cannot take now (EAGAIN) is queued for its destination
alone and retried on a timer (:mod:`.send_queues`): a Unix datagram socket
never drops for a full peer, it makes the sender wait, and one peer that
stops reading holds up nobody else.

A socket bound to a wildcard address answers every peer from the address the
peer reached it at (:mod:`.pktinfo`), so its peers' source checks pass.

A UDP socket reads the ICMP errors the kernel queues for it (:mod:`.icmp`):
each is reported to the sink with the peer it concerns (a port unreachable as
:class:`~aiodisp.PeerUnreachable`), as soon as a receive or a send meets it.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import socket
import stat
from collections.abc import Callable
from typing import Any, NamedTuple

from ..errors import TransportError
from . import icmp, pktinfo
from .addresses import (
    UNIX_PATH_MAX,
    canonical_unix_path,
    check_port,
    is_wildcard,
    received_unix_address,
    resolve_address,
    transport_error,
    unbound_peer_error,
)
from .base import Address, DatagramSink
from .send_queues import BLOCKED, PeerQueues

__all__ = [
    "DEFAULT_BUFFER_SIZE",
    "SocketTransport",
    "UDP4_MAX",
    "UDP6_MAX",
    "UNIX_MAX",
    "make_udp_socket",
    "make_unix_socket",
]

UDP4_MAX = 65507
UDP6_MAX = 65527
UNIX_MAX = 65507

#: What :func:`make_udp_socket` asks the kernel for, for each of the receive and
#: send buffers, unless told otherwise (Linux grants twice the figure, for its
#: bookkeeping, capped by ``net.core.rmem_max`` / ``wmem_max``).
DEFAULT_BUFFER_SIZE = 4 << 20

_MAPPED = "::ffff:"
_UNIX_NAMES_MAX = 4096
_MISSING: Any = object()


class SocketTransport:
    """A datagram transport over one bound, non-blocking socket (UDP or Unix).

    ``high_water``, ``max_queued_per_peer`` and ``max_queued_bytes`` bound the
    send queues (per destination, per destination and in all; see
    :mod:`.send_queues`).
    """

    def __init__(
        self,
        sock: socket.socket,
        *,
        reliable: bool,
        max_datagram_size: int,
        unlink_on_close: str | None = None,
        batch: int = 256,
        high_water: int = 256,
        max_queued_per_peer: int = 1024,
        max_queued_bytes: int = 16 << 20,
    ) -> None:
        sock.setblocking(False)
        self._sock = sock
        self._loop = asyncio.get_running_loop()
        self._reliable = reliable
        self._max = max_datagram_size
        self._unlink = unlink_on_close
        self._batch = batch
        self._family = family = sock.family
        self._sink: DatagramSink | None = None
        self._closed = False
        #: True ends the read batch in progress (set by close() and yield_reading();
        #: a reader installed with read_with() checks it too)
        self.stop_reading = False
        self._sources: pktinfo.SourceTable | None = None
        self._unix_names: dict[Any, str | None] = {}
        self._read_ready: Callable[[], None]
        self._sendto: Callable[[bytes, Address], object]
        #: the kernel queues ICMP errors on this socket (read them when an error shows)
        self._errqueue = family != socket.AF_UNIX and icmp.enable(sock)
        local: Any = sock.getsockname()
        if family == socket.AF_UNIX:
            local = received_unix_address(local)
            self._read_ready = self._read_unix
            self._sendto = sock.sendto
        elif is_wildcard(local[0]) or local[0].startswith(_MAPPED):
            pktinfo.enable(sock)
            self._sources = pktinfo.SourceTable()
            self._read_ready = self._read_pktinfo
            self._sendto = _pktinfo_sender(sock, self._sources.sources)
            if local[0].startswith(_MAPPED):
                local = (local[0][7:], local[1])
        elif family == socket.AF_INET6:
            self._read_ready = self._read_plain
            self._sendto = _v6_sender(sock)
        else:
            self._read_ready = self._read_plain
            self._sendto = sock.sendto
        self._local_addr: Address = local
        self._queues = PeerQueues(
            self._loop,
            self._queued_sendto if self._errqueue else self._sendto,
            self._report,
            high_water=high_water,
            max_per_peer=max_queued_per_peer,
            max_bytes=max_queued_bytes,
        )

    # -- the DatagramTransport interface

    @property
    def local_addr(self) -> Address:
        return self._local_addr

    @property
    def reliable(self) -> bool:
        return self._reliable

    @property
    def max_datagram_size(self) -> int:
        return self._max

    @property
    def socket(self) -> socket.socket:
        return self._sock

    @property
    def buffer_sizes(self) -> tuple[int, int]:
        """The socket's receive and send buffers in bytes, as the kernel granted them."""
        return _buffer_sizes(self._sock)

    @property
    def answers_from_reached_address(self) -> bool:
        """True on a wildcard-bound socket, which replies from the address each peer called."""
        return self._sources is not None

    def start(self, sink: DatagramSink) -> None:
        if self._closed:
            raise TransportError("the transport is closed")
        self._sink = sink
        self._loop.add_reader(self._sock.fileno(), self._read_ready)

    # -- receiving

    def _read_plain(self) -> None:
        self.stop_reading = self._closed
        recvfrom = self._sock.recvfrom
        bufsize = self._max + 1  # one more byte shows an oversize datagram
        sink = self._sink
        assert sink is not None
        deliver = sink.datagram_received
        for _ in range(self._batch):
            try:
                data, addr = recvfrom(bufsize)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self._receive_failed(exc)
                return
            deliver(data, addr)
            if self.stop_reading:  # closed, or yield_reading()
                return

    def _read_unix(self) -> None:
        self.stop_reading = self._closed
        recvfrom = self._sock.recvfrom
        bufsize = self._max + 1
        sink = self._sink
        assert sink is not None
        deliver = sink.datagram_received
        names = self._unix_names
        for _ in range(self._batch):
            try:
                data, raw = recvfrom(bufsize)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self._receive_failed(exc)
                return
            if raw.__class__ is str and raw:
                deliver(data, raw)  # a path, as the sender bound it
            else:  # an abstract name (bytes), or None: an unbound sender
                addr = names.get(raw, _MISSING)
                if addr is _MISSING:
                    addr = received_unix_address(raw)
                    if len(names) >= _UNIX_NAMES_MAX:
                        names.clear()
                    names[raw] = addr
                deliver(data, addr)
            if self.stop_reading:  # closed, or yield_reading()
                return

    def _read_pktinfo(self) -> None:
        self.stop_reading = self._closed
        recvmsg = self._sock.recvmsg
        bufsize = self._max + 1
        ancsize = pktinfo.ANCILLARY_SIZE
        sink = self._sink
        sources = self._sources
        assert sink is not None and sources is not None
        deliver = sink.datagram_received
        table = sources.sources
        cmsgs = sources.cmsgs
        v6 = self._family == socket.AF_INET6
        for _ in range(self._batch):
            try:
                data, anc, _flags, addr = recvmsg(bufsize, ancsize)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self._receive_failed(exc)
                return
            if v6:
                host = addr[0]
                if host.startswith(_MAPPED) and "." in host:
                    addr = (host[7:], addr[1])
            if anc:
                level, kind, cdata = anc[0]
                cmsg = cmsgs.get(cdata)
                if cmsg is None:
                    cmsg = sources.cmsg_for(level, kind, cdata)
                if table.get(addr) is not cmsg:
                    sources.learn(addr, cmsg)
            deliver(data, addr)
            if self.stop_reading:  # closed, or yield_reading()
                return

    # -- a receiver that reads the socket itself (the inline server's, aiodisp._serve)

    @property
    def read_path(self) -> ReadPath | None:
        """The pieces of the plain read loop, for a reader installed with
        :meth:`read_with`; None unless this socket is read plainly (an IP socket
        bound to one address: no Unix names, no source addresses to learn)."""
        if self._read_ready != self._read_plain or self._closed:
            return None
        return ReadPath(self._sock.recvfrom, self._max + 1, self._batch, self._begin_read,
                        self._receive_failed)

    def _begin_read(self) -> bool:
        """A read batch begins: False if the transport is closed (read nothing)."""
        self.stop_reading = self._closed
        return not self._closed

    def read_with(self, reader: Callable[[], None] | None) -> None:
        """Call ``reader()`` when the socket is readable, in place of this transport's
        own read loop (None: its own again). ``reader`` starts each batch with
        ``read_path.begin()`` (and reads nothing if it answers False), reads at most
        ``read_path.batch`` datagrams with ``read_path.recvfrom(read_path.bufsize)``,
        hands an ``OSError`` other than EAGAIN / EINTR to ``read_path.failed`` and
        ends its batch, and ends it too once :attr:`stop_reading` is true."""
        if self._closed:
            return
        fd = self._sock.fileno()
        self._loop.remove_reader(fd)
        self._loop.add_reader(fd, self._read_ready if reader is None else reader)

    # -- sending

    def send(self, data: bytes, addr: Address) -> bool:
        """Send, or queue for ``addr`` alone if it cannot take the datagram now.

        Returns True when ``addr``'s queue has reached ``high_water``: ``await
        wait_writable(addr)`` before sending it more. Raises
        :class:`TransportError` for every failure (its ``errno`` says which:
        EDESTADDRREQ for a peer with no address, EINVAL for a malformed one,
        EAGAIN for a full queue, else the kernel's).
        """
        queues = self._queues
        if queues.queues:
            try:
                q = queues.queues.get(addr)
            except TypeError as exc:
                raise self._bad_send(addr, exc) from exc
            if q is not None:
                return queues.put(q, data, addr)
        try:
            self._sendto(data, addr)
        except OSError as exc:
            if exc.errno in BLOCKED and not self._closed:
                return queues.put(queues.start(addr), data, addr)
            if not self._queued_errors_read(exc):
                raise self._send_error(addr, exc) from exc
            return self._send_again(data, addr, best_effort=False)
        except Exception as exc:  # TypeError, ValueError, OverflowError: not an address
            raise self._bad_send(addr, exc) from exc
        return False

    def send_best_effort(self, data: bytes, addr: Address) -> bool:
        """Send a datagram its sender can lose (an ACK, a cached or inline reply).

        Queued like :meth:`send` while ``addr``'s queue is below ``high_water``;
        past it, dropped and False is returned. Raises :class:`TransportError`
        as :meth:`send` does for every other failure.
        """
        queues = self._queues
        if queues.queues:
            try:
                q = queues.queues.get(addr)
            except TypeError as exc:
                raise self._bad_send(addr, exc) from exc
            if q is not None:
                return queues.put_best_effort(q, data)
        try:
            self._sendto(data, addr)
        except Exception as exc:
            return self._best_effort_failed(data, addr, exc)
        return True

    def _best_effort_failed(self, data: bytes, addr: Address, exc: Exception) -> bool:
        """``sendto`` raised ``exc`` for a best-effort datagram: queue it, send it
        again, or raise, as :meth:`send_best_effort` does."""
        if not isinstance(exc, OSError):  # TypeError, ValueError, OverflowError: not an address
            raise self._bad_send(addr, exc) from exc
        if exc.errno in BLOCKED and not self._closed:
            queues = self._queues
            return queues.put_best_effort(queues.start(addr), data)
        if not self._queued_errors_read(exc):
            raise self._send_error(addr, exc) from exc
        return self._send_again(data, addr, best_effort=True)

    @property
    def reply_path(
        self,
    ) -> tuple[
        Callable[[bytes, Address], object],
        dict[Address, Any],
        Callable[[bytes, Address, Exception], bool],
    ]:
        """:meth:`send_best_effort` in pieces, for a server's hot path: ``(sendto, queued,
        failed)``.

        While ``queued`` (the destinations with a send queue) is empty,
        ``sendto(data, addr)`` sends a best-effort datagram, and when it raises,
        ``failed(data, addr, exc)`` does what :meth:`send_best_effort` would
        (queue it, send it again, raise TransportError) and returns what it
        would; otherwise call :meth:`send_best_effort`. One Python frame less per
        reply (see ``aiodisp._serve``).
        """
        return self._sendto, self._queues.queues, self._best_effort_failed

    # -- ICMP errors (see .icmp)

    def _receive_failed(self, exc: OSError) -> None:
        """A receive failed: report the errors queued for the peers (or ``exc`` itself)."""
        sink = self._sink
        assert sink is not None
        errors = icmp.drain(self._sock) if self._errqueue and not self._closed else []
        for error in errors or (exc,):
            sink.error_received(error)
            if self._closed:
                return

    def _queued_errors_read(self, exc: OSError) -> bool:
        """A send failed with ``exc``: was that an ICMP error queued before, for some
        datagram sent earlier? If so it is read and reported (True)."""
        if not self._errqueue or self._closed:
            return False
        errors = icmp.drain(self._sock)
        for error in errors:
            self._report(error)
        return bool(errors)

    def _queued_sendto(self, data: bytes, addr: Address) -> None:
        """The send queues' send: once more if refused for an earlier datagram's error."""
        try:
            self._sendto(data, addr)
        except OSError as exc:
            if exc.errno in BLOCKED or not self._queued_errors_read(exc):
                raise
            self._sendto(data, addr)

    def _send_again(self, data: bytes, addr: Address, *, best_effort: bool) -> bool:
        """Send once more a datagram refused for an earlier datagram's error (see
        :meth:`_queued_errors_read`); what :meth:`send` or :meth:`send_best_effort` returns."""
        queues = self._queues
        try:
            self._sendto(data, addr)
        except OSError as exc:
            if exc.errno in BLOCKED and not self._closed:
                q = queues.start(addr)
                return queues.put_best_effort(q, data) if best_effort else queues.put(q, data, addr)
            raise self._send_error(addr, exc) from exc
        except Exception as exc:
            raise self._bad_send(addr, exc) from exc
        return best_effort

    def _send_error(self, addr: Address, exc: OSError) -> TransportError:
        if self._closed:
            return transport_error("the transport is closed", errno.EBADF)
        if self._family == socket.AF_UNIX and (addr is None or addr in ("", b"")):
            return unbound_peer_error(addr)
        if isinstance(exc, socket.gaierror):  # a host name, or of the wrong family
            return transport_error(f"cannot send to {addr!r}: {exc}")
        return transport_error(f"cannot send to {addr!r}: {exc}", exc.errno or errno.EIO)

    def _bad_send(self, addr: Address, exc: Exception) -> TransportError:
        if self._closed:
            return transport_error("the transport is closed", errno.EBADF)
        if addr is None or addr == "" or addr == b"":
            if self._family == socket.AF_UNIX:
                return unbound_peer_error(addr)
            return transport_error(f"{addr!r} is not an address", errno.EDESTADDRREQ)
        return transport_error(f"cannot send to {addr!r}: {exc}")

    def _report(self, exc: Exception) -> None:
        if self._sink is not None and not self._closed:
            self._sink.error_received(exc)

    async def wait_writable(self, addr: Address | None = None) -> None:
        """Return once ``addr``'s send queue (default: every queue) is below half its
        high-water mark, or the transport is closed."""
        await self._queues.wait_writable(addr)

    @property
    def queued(self) -> int:
        """Datagrams waiting in the send queues, for every destination."""
        return self._queues.datagrams

    def queued_for(self, addr: Address) -> int:
        """Datagrams waiting for ``addr``."""
        q = self._queues.queues.get(addr)
        return 0 if q is None else len(q.datagrams)

    @property
    def send_queues(self) -> PeerQueues:
        """The per-destination queues (bounds and counters, for tests and metrics)."""
        return self._queues

    def source_for(self, addr: Address) -> str | None:
        """The local address replies to ``addr`` leave from (None: the kernel's choice)."""
        return None if self._sources is None else self._sources.source_of(addr)

    async def resolve(self, addr: Address) -> Address:
        return await resolve_address(self._loop, self._family, addr)

    def yield_reading(self) -> None:
        """End the read batch in progress after the datagram being delivered: what
        else waits stays in the kernel's buffer until the loop's next iteration
        (the dispatcher's readers run first)."""
        self.stop_reading = True

    def close(self) -> None:
        if self._closed:
            return
        self._closed = self.stop_reading = True
        self._queues.close()
        with contextlib.suppress(ValueError, OSError):
            self._loop.remove_reader(self._sock.fileno())
        self._sock.close()
        if self._unlink is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._unlink)


class ReadPath(NamedTuple):
    """:attr:`SocketTransport.read_path`: what a reader of the socket needs."""

    recvfrom: Callable[[int], tuple[bytes, Any]]
    bufsize: int
    batch: int
    #: ``begin()`` at the start of each batch: False if the transport is closed
    begin: Callable[[], bool]
    #: ``failed(exc)``: a receive failed with ``exc``
    failed: Callable[[OSError], None]


def _v6_sender(sock: socket.socket) -> Callable[[bytes, Address], object]:
    """``sock.sendto`` for canonical addresses on an AF_INET6 socket (IPv4 peers mapped)."""
    sendto = sock.sendto

    def send(data: bytes, addr: Address) -> object:
        if len(addr) == 2 and ":" not in addr[0]:
            addr = (_MAPPED + addr[0], addr[1], 0, 0)
        return sendto(data, addr)

    return send


def _pktinfo_sender(
    sock: socket.socket, sources: dict[Address, pktinfo.Cmsg]
) -> Callable[[bytes, Address], object]:
    """Send from the address each peer reached (its control message in ``sources``)."""
    sendto = sock.sendto
    sendmsg = sock.sendmsg
    get = sources.get
    v6 = sock.family == socket.AF_INET6

    def send(data: bytes, addr: Address) -> object:
        cmsg = get(addr)
        if v6 and len(addr) == 2 and ":" not in addr[0]:
            target = (_MAPPED + addr[0], addr[1], 0, 0)
            if cmsg is None:
                return sendto(data, target)
            return sendmsg((data,), cmsg, 0, target)
        if cmsg is None:
            return sendto(data, addr)
        return sendmsg((data,), cmsg, 0, addr)

    return send


def _buffer_sizes(sock: socket.socket) -> tuple[int, int]:
    return (
        sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF),
        sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF),
    )


def make_udp_socket(
    local_addr: tuple[Any, ...] | None = None,
    *,
    reuse_port: bool = False,
    family: int | None = None,
    buffer_size: int | None = DEFAULT_BUFFER_SIZE,
) -> tuple[socket.socket, int]:
    """A bound UDP socket for ``local_addr`` and its largest datagram.

    ``local_addr=None`` binds the wildcard: a dual-stack ``("::", 0)`` socket
    (IPV6_V6ONLY off) where the host has IPv6, else ``("0.0.0.0", 0)``.
    ``buffer_size`` asks the kernel for receive and send buffers of that many
    bytes (it may grant less: ``net.core.rmem_max`` / ``wmem_max`` cap it);
    None keeps the kernel's default.
    """
    if local_addr is None:
        try:
            return _bind_udp(("::", 0), socket.AF_INET6, reuse_port, buffer_size, dual_stack=True)
        except TransportError:
            local_addr = ("0.0.0.0", 0)
    if not (isinstance(local_addr, tuple) and len(local_addr) in (2, 4)):
        raise TransportError(f"cannot bind to {local_addr!r}: not a (host, port) address")
    host = local_addr[0]
    try:
        check_port(local_addr, local_addr[1])
    except TransportError as exc:
        raise TransportError(f"cannot bind to {exc}") from None
    if family is None:
        family = socket.AF_INET6 if isinstance(host, str) and ":" in host else socket.AF_INET
    return _bind_udp(local_addr, family, reuse_port, buffer_size, dual_stack=False)


def _bind_udp(
    local_addr: tuple[Any, ...],
    family: int,
    reuse_port: bool,
    buffer_size: int | None,
    *,
    dual_stack: bool,
) -> tuple[socket.socket, int]:
    try:
        infos = socket.getaddrinfo(local_addr[0], local_addr[1], family, socket.SOCK_DGRAM)
    except (socket.gaierror, UnicodeError, TypeError) as exc:
        raise TransportError(f"cannot bind to {local_addr!r}: {exc}") from exc
    bind_addr: Any = infos[0][4]
    if family == socket.AF_INET6 and len(local_addr) == 4:
        bind_addr = (bind_addr[0], bind_addr[1], local_addr[2], local_addr[3])
    try:
        sock = socket.socket(family, socket.SOCK_DGRAM)
    except OSError as exc:
        raise TransportError(f"cannot open a socket for {local_addr!r}: {exc}") from exc
    try:
        if dual_stack:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if buffer_size is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, buffer_size)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, buffer_size)
        sock.bind(bind_addr)
    except (OSError, OverflowError, TypeError) as exc:
        sock.close()
        raise TransportError(f"cannot bind to {local_addr!r}: {exc}") from exc
    return sock, (UDP6_MAX if family == socket.AF_INET6 else UDP4_MAX)


def make_unix_socket(path: str | os.PathLike[str] | bytes) -> tuple[socket.socket, str | None]:
    """A Unix datagram socket bound to ``path`` and the path to remove on close.

    A path is bound in its canonical form (absolute, the directories' symlinks
    resolved: what peers' addresses resolve to); a stale socket file there is
    replaced. An abstract name (``"\\0name"``) is bound as is, and ``""``
    autobinds an abstract name; neither leaves a file.
    """
    fspath = os.fsdecode(path)
    if fspath == "" or fspath.startswith("\0"):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            sock.bind(fspath)
        except OSError as exc:
            sock.close()
            raise TransportError(f"cannot bind to {fspath!r}: {exc}") from exc
        return sock, None
    # The directories resolved, not the name itself: bind() does not follow it.
    head, tail = os.path.split(fspath)
    canonical = os.path.join(canonical_unix_path(head or "."), tail)
    if len(os.fsencode(canonical)) > UNIX_PATH_MAX:
        canonical = fspath  # only the name as given fits in sun_path
    with contextlib.suppress(FileNotFoundError):
        if stat.S_ISSOCK(os.stat(canonical).st_mode):
            if _unix_in_use(canonical):
                raise TransportError(f"{fspath!r} is in use by another socket")
            os.unlink(canonical)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        sock.bind(canonical)
    except OSError as exc:
        sock.close()
        raise TransportError(f"cannot bind to {fspath!r}: {exc}") from exc
    return sock, canonical


def _unix_in_use(path: str) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        probe.connect(path)
    except OSError:
        return False
    finally:
        probe.close()
    return True
