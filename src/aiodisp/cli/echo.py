"""The echo server: every message goes back to its sender as a reply.

One server for every use: ``aiodisp serve`` (and its worker processes),
``aiodisp bench``'s embedded server and ``bench --serve``, and the benchmark
harness (:func:`serve_echo`). The handler is the format's plain-function
:meth:`~aiodisp.cli.formats.Format.echo`, which :class:`aiodisp.Server` calls
inline from the receive path (no task per message).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from typing import Any

import aiodisp
from aiodisp import Dispatcher, Framing, ServeStats

from .args import Where
from .formats import Format, IdPrefixFormat

__all__ = ["ECHO_QUEUE", "buffer_sizes", "open_echo", "serve_echo"]

#: The incoming queue of an echo server (a burst from many clients waits there).
ECHO_QUEUE = 8192


async def open_echo(
    where: Where,
    framing: Framing,
    fmt: Format[Any],
    *,
    reuse_port: bool = False,
    sockbuf: int | None = None,
) -> Dispatcher[Any]:
    """A dispatcher for an echo server at ``where``.

    ``sockbuf`` sets the UDP socket's kernel buffers in bytes: None leaves
    :func:`aiodisp.open_udp`'s default, 0 the kernel's.
    """
    if where.kind == "unix":
        return await aiodisp.open_unix(fmt.adapter, where.addr, framing=framing,
                                       max_queue=ECHO_QUEUE)
    options: dict[str, Any] = {} if sockbuf is None else {"buffer_size": sockbuf or None}
    return await aiodisp.open_udp(
        fmt.adapter, where.addr, framing=framing, reuse_port=reuse_port,
        max_queue=ECHO_QUEUE, **options,
    )


def buffer_sizes(d: Dispatcher[Any]) -> tuple[int, int] | None:
    """The kernel's receive and send buffer sizes of ``d``'s socket (as getsockopt says)."""
    sizes = getattr(d.transport, "buffer_sizes", None)
    if isinstance(sizes, tuple):
        return (int(sizes[0]), int(sizes[1]))
    sock = getattr(d.transport, "socket", None)
    if not isinstance(sock, socket.socket):
        return None
    try:
        return (sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF),
                sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF))
    except OSError:
        return None


async def serve_echo(
    addr: tuple[str, int],
    framing: Framing,
    *,
    fmt: Format[Any] | None = None,
    ready: Callable[[Any], None] | None = None,
    stop: asyncio.Future[None] | None = None,
    reuse_port: bool = False,
    sockbuf: int | None = None,
) -> ServeStats:
    """Echo every message arriving at UDP ``addr`` until ``stop`` is done (or cancelled).

    ``fmt`` defaults to :class:`IdPrefixFormat` (what the benchmark harness speaks);
    ``ready(local_addr)`` is called once the socket is bound. Returns what the
    server did.
    """
    fmt = fmt if fmt is not None else IdPrefixFormat()
    d = await open_echo(Where("udp", addr), framing, fmt, reuse_port=reuse_port, sockbuf=sockbuf)
    serving: asyncio.Future[ServeStats] = asyncio.ensure_future(aiodisp.Server(d, fmt.echo).run())
    try:
        if ready is not None:
            ready(d.local_addr)
        if stop is None:
            await asyncio.shield(serving)
        else:
            waits: list[asyncio.Future[Any]] = [serving, stop]
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        await d.close()  # the server's run() returns: it is awaited even when cancelled
        stats = await serving
    return stats
