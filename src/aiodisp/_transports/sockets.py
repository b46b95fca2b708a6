"""UDP and Unix-datagram transports on a non-blocking socket.

The receive side reads through ``loop.add_reader`` and drains up to ``batch``
queued datagrams per wake-up (asyncio's own datagram transport reads one per
loop iteration, one ``epoll_wait`` per datagram). A send the kernel cannot take
now (EAGAIN) is queued and retried on a short, growing timer: a Unix datagram
socket never drops for a full peer, it makes the sender wait; a UDP socket's
queue is bounded and drops past it (counted by the dispatcher).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import socket
import stat
from collections import deque
from typing import Any

from ..errors import TransportError
from .addresses import resolve_address
from .base import Address, DatagramSink

UDP4_MAX = 65507
UDP6_MAX = 65527
UNIX_MAX = 65507

_RETRY_FIRST = 0.0005
_RETRY_MAX = 0.05
_BLOCKED = (errno.EAGAIN, errno.EWOULDBLOCK, errno.ENOBUFS)


class SocketTransport:
    """A datagram transport over one bound, non-blocking socket (UDP or Unix)."""

    def __init__(
        self,
        sock: socket.socket,
        *,
        reliable: bool,
        max_datagram_size: int,
        unlink_on_close: str | None = None,
        batch: int = 256,
        high_water: int = 256,
        max_queued: int | None = 4096,
    ) -> None:
        sock.setblocking(False)
        self._sock = sock
        self._loop = asyncio.get_running_loop()
        self._reliable = reliable
        self._max = max_datagram_size
        self._unlink = unlink_on_close
        self._batch = batch
        self._high = high_water
        self._low = high_water // 2
        self._max_queued = None if reliable else max_queued
        self._local_addr: Address = sock.getsockname()
        self._family = sock.family
        self._queue: deque[tuple[bytes, Address]] = deque()
        self._retry: asyncio.TimerHandle | None = None
        self._retry_delay = _RETRY_FIRST
        self._writers: list[asyncio.Future[None]] = []
        self._sink: DatagramSink | None = None
        self._closed = False

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

    def start(self, sink: DatagramSink) -> None:
        if self._closed:
            raise TransportError("the transport is closed")
        self._sink = sink
        self._loop.add_reader(self._sock.fileno(), self._read_ready)

    def _read_ready(self) -> None:
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
                sink.error_received(exc)
                return
            deliver(data, addr)
            if self._closed:
                return

    def send(self, data: bytes, addr: Address) -> bool:
        if self._closed:
            raise TransportError("the transport is closed")
        queue = self._queue
        if queue:
            return self._enqueue(data, addr)
        try:
            self._sock.sendto(data, addr)
        except OSError as exc:
            if exc.errno not in _BLOCKED:
                raise TransportError(f"cannot send to {addr!r}: {exc}") from exc
            return self._enqueue(data, addr)
        return False

    def _enqueue(self, data: bytes, addr: Address) -> bool:
        queue = self._queue
        if self._max_queued is not None and len(queue) >= self._max_queued:
            raise TransportError(f"the send queue is full ({len(queue)} datagrams); dropped")
        queue.append((data, addr))
        if self._retry is None:
            self._retry_delay = _RETRY_FIRST
            self._retry = self._loop.call_later(self._retry_delay, self._flush)
        return len(queue) >= self._high

    def _flush(self) -> None:
        self._retry = None
        queue = self._queue
        sendto = self._sock.sendto
        before = len(queue)
        while queue:
            data, addr = queue[0]
            try:
                sendto(data, addr)
            except OSError as exc:
                if exc.errno in _BLOCKED:
                    # The peer is reading if anything went out: look again soon;
                    # otherwise back off (poll() cannot tell us when an unconnected
                    # Unix datagram peer has room again).
                    progressed = len(queue) < before
                    self._retry_delay = (
                        _RETRY_FIRST if progressed else min(self._retry_delay * 2, _RETRY_MAX)
                    )
                    self._retry = self._loop.call_later(self._retry_delay, self._flush)
                    break
                queue.popleft()
                if self._sink is not None:
                    self._sink.error_received(exc)
                continue
            queue.popleft()
        else:
            self._retry_delay = _RETRY_FIRST
        if len(queue) < self._low:
            self._wake_writers()

    def _wake_writers(self) -> None:
        writers, self._writers = self._writers, []
        for fut in writers:
            if not fut.done():
                fut.set_result(None)

    async def wait_writable(self) -> None:
        while not self._closed and len(self._queue) >= self._low:
            fut = self._loop.create_future()
            self._writers.append(fut)
            await fut

    @property
    def queued(self) -> int:
        return len(self._queue)

    async def resolve(self, addr: Address) -> Address:
        return await resolve_address(self._loop, self._family, addr)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        self._queue.clear()
        self._wake_writers()
        with contextlib.suppress(ValueError, OSError):
            self._loop.remove_reader(self._sock.fileno())
        self._sock.close()
        if self._unlink is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._unlink)


def make_udp_socket(
    local_addr: tuple[Any, ...],
    *,
    reuse_port: bool = False,
    family: int | None = None,
    buffer_size: int | None = None,
) -> tuple[socket.socket, int]:
    """A bound UDP socket for ``local_addr`` and its largest datagram.

    ``buffer_size`` asks the kernel for receive and send buffers of that many
    bytes (it may grant less: ``net.core.rmem_max`` / ``wmem_max`` cap it).
    """
    host = local_addr[0]
    if family is None:
        family = socket.AF_INET6 if isinstance(host, str) and ":" in host else socket.AF_INET
    try:
        infos = socket.getaddrinfo(host, local_addr[1], family, socket.SOCK_DGRAM)
    except socket.gaierror as exc:
        raise TransportError(f"cannot bind to {local_addr!r}: {exc}") from exc
    bind_addr: Any = infos[0][4]
    if family == socket.AF_INET6 and len(local_addr) == 4:
        bind_addr = (bind_addr[0], bind_addr[1], local_addr[2], local_addr[3])
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if buffer_size is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, buffer_size)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, buffer_size)
        sock.bind(bind_addr)
    except OSError as exc:
        sock.close()
        raise TransportError(f"cannot bind to {local_addr!r}: {exc}") from exc
    return sock, (UDP6_MAX if family == socket.AF_INET6 else UDP4_MAX)


def make_unix_socket(path: str | os.PathLike[str]) -> tuple[socket.socket, str]:
    """A Unix datagram socket bound to ``path``; a stale socket file there is replaced."""
    fspath = os.fsdecode(path)
    with contextlib.suppress(FileNotFoundError):
        if stat.S_ISSOCK(os.stat(fspath).st_mode):
            if _unix_in_use(fspath):
                raise TransportError(f"{fspath!r} is in use by another socket")
            os.unlink(fspath)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        sock.bind(fspath)
    except OSError as exc:
        sock.close()
        raise TransportError(f"cannot bind to {fspath!r}: {exc}") from exc
    return sock, fspath


def _unix_in_use(path: str) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        probe.connect(path)
    except OSError:
        return False
    finally:
        probe.close()
    return True
