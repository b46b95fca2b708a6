"""The factories: each opens a transport and returns a started Dispatcher on it."""

from __future__ import annotations

import asyncio
import os
from typing import Any, TypeVar

from ._adapter import MessageAdapter
from ._core.framing import Framing
from ._dispatcher import Dispatcher
from ._transports.base import DatagramTransport
from ._transports.loop_datagram import LoopDatagramTransport, loop_reads_natively
from ._transports.memory import Link, MemoryNetwork
from ._transports.sockets import UNIX_MAX, SocketTransport, make_udp_socket, make_unix_socket

__all__ = ["open_memory_pair", "open_udp", "open_unix"]

M = TypeVar("M")


async def open_udp(
    adapter: MessageAdapter[M],
    local_addr: tuple[Any, ...] = ("127.0.0.1", 0),
    *,
    framing: Framing = "ack",
    reuse_port: bool = False,
    buffer_size: int | None = None,
    max_datagram_size: int | None = None,
    **options: Any,
) -> Dispatcher[M]:
    """A dispatcher on a UDP socket bound to ``local_addr`` (IPv4 or IPv6).

    ``reuse_port=True`` sets SO_REUSEPORT so several processes can serve one
    port. ``buffer_size`` sets the socket's kernel receive and send buffers
    (bytes): raise it when many requests are in flight, or a burst of replies
    can overflow the default (about 208 KiB on Linux) and be lost. Other keyword
    options are the :class:`Dispatcher`'s.
    """
    sock, limit = make_udp_socket(local_addr, reuse_port=reuse_port, buffer_size=buffer_size)
    size = min(limit, max_datagram_size or limit)
    transport: DatagramTransport
    try:
        if loop_reads_natively(asyncio.get_running_loop()):
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
    **options: Any,
) -> Dispatcher[M]:
    """A dispatcher on a Unix datagram socket bound to ``path``.

    The socket file is removed on close; a stale one left at ``path`` by a dead
    process is replaced, a live one raises :class:`TransportError`. Sends wait
    for room when the peer's queue is full, so the transport is reliable.
    """
    sock, fspath = make_unix_socket(path)
    transport = SocketTransport(
        sock,
        reliable=True,
        max_datagram_size=min(UNIX_MAX, max_datagram_size or UNIX_MAX),
        unlink_on_close=fspath,
    )
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
