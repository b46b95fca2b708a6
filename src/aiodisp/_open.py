"""The factories: each opens a transport and returns a started Dispatcher on it."""

from __future__ import annotations

import asyncio
import os
from typing import Any, TypeVar

from ._adapter import MessageAdapter
from ._core.framing import Framing
from ._dispatcher import Dispatcher
from ._transports.base import DatagramTransport
from ._transports.loop_datagram import (
    LoopDatagramTransport,
    loop_reads_natively,
    native_transport_fits,
)
from ._transports.memory import Link, MemoryNetwork
from ._transports.sockets import (
    DEFAULT_BUFFER_SIZE,
    UNIX_MAX,
    SocketTransport,
    make_udp_socket,
    make_unix_socket,
)

__all__ = ["open_memory_pair", "open_udp", "open_unix"]

M = TypeVar("M")


async def open_udp(
    adapter: MessageAdapter[M],
    local_addr: tuple[Any, ...] | None = None,
    *,
    framing: Framing = "ack",
    reuse_port: bool = False,
    buffer_size: int | None = DEFAULT_BUFFER_SIZE,
    max_datagram_size: int | None = None,
    **options: Any,
) -> Dispatcher[M]:
    """A dispatcher on a UDP socket bound to ``local_addr`` (IPv4 or IPv6).

    Without ``local_addr`` it binds the wildcard: a dual-stack ``("::", 0)``
    socket where the host has IPv6, else ``("0.0.0.0", 0)``. A socket bound to
    a wildcard answers every peer from the address the peer reached it at.
    ``reuse_port=True`` sets SO_REUSEPORT so several processes can serve one
    port. ``buffer_size`` (default 4 MiB; None: the kernel's default) sets the
    socket's kernel receive and send buffers in bytes; the kernel may grant
    less (``net.core.rmem_max``), ``d.transport.buffer_sizes`` says what it
    granted. Other keyword options are the :class:`Dispatcher`'s.
    """
    sock, limit = make_udp_socket(local_addr, reuse_port=reuse_port, buffer_size=buffer_size)
    size = min(limit, max_datagram_size or limit)
    transport: DatagramTransport
    try:
        if loop_reads_natively(asyncio.get_running_loop()) and native_transport_fits(sock):
            transport = await LoopDatagramTransport.open(sock, max_datagram_size=size)
        else:
            transport = SocketTransport(sock, reliable=False, max_datagram_size=size)
    except BaseException:
        sock.close()
        raise
    return _start(transport, adapter, framing, options)


async def open_unix(
    adapter: MessageAdapter[M],
    path: str | os.PathLike[str],
    *,
    framing: Framing = "ack",
    max_datagram_size: int | None = None,
    max_queued_per_peer: int = 1024,
    **options: Any,
) -> Dispatcher[M]:
    """A dispatcher on a Unix datagram socket bound to ``path``.

    The socket file is removed on close; a stale one left at ``path`` by a dead
    process is replaced, a live one raises :class:`TransportError`. Sends wait
    for room when the peer's queue is full, so the transport is reliable. Each
    peer that cannot take a datagram now gets a send queue of its own, of at
    most ``max_queued_per_peer`` datagrams: a peer that stops reading holds up
    no other (see docs/tuning.md).
    """
    sock, fspath = make_unix_socket(path)
    try:
        transport = SocketTransport(
            sock,
            reliable=True,
            max_datagram_size=min(UNIX_MAX, max_datagram_size or UNIX_MAX),
            unlink_on_close=fspath,
            high_water=min(256, max_queued_per_peer),
            max_queued_per_peer=max_queued_per_peer,
        )
    except BaseException:
        sock.close()
        raise
    return _start(transport, adapter, framing, options)


async def open_memory_pair(
    adapter: MessageAdapter[M],
    *,
    link: Link | None = None,
    framing: Framing = "ack",
    **options: Any,
) -> tuple[Dispatcher[M], Dispatcher[M]]:
    """Two dispatchers joined by an in-memory link that injects ``link``'s faults."""
    network = MemoryNetwork(link)
    a = _start(network.transport(), adapter, framing, options)
    b = _start(network.transport(), adapter, framing, options)
    return a, b


def _start(
    transport: DatagramTransport,
    adapter: MessageAdapter[M],
    framing: Framing,
    options: dict[str, Any],
) -> Dispatcher[M]:
    try:
        return Dispatcher(transport, adapter, framing=framing, **options)
    except BaseException:
        transport.close()
        raise
