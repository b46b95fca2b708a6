"""The hand-rolled matcher reading through ``loop.add_reader``, draining every queued datagram.

asyncio's own datagram transport reads one datagram per loop iteration (one
``epoll_wait`` each); reading the socket directly until EAGAIN amortises the
wake-up over everything queued. The issue's "~90k on the default loop" figure.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from typing import Any

from common import REPLY_BIT, WORD

VARIANTS = ("raw",)
ECHO_MODE = {"raw": "raw"}
_MASK = REPLY_BIT - 1
_unpack = WORD.unpack_from


def _expire(fut: asyncio.Future[bytes]) -> None:
    if not fut.done():
        fut.set_exception(TimeoutError())


def _bound_socket(addr: tuple[str, int]) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)
    sock.bind(addr)
    return sock


async def open_client(
    variant: str, target: tuple[str, int], timeout: float
) -> tuple[Callable[[int, bytes], Awaitable[bytes]], Callable[[], Awaitable[None]]]:
    loop = asyncio.get_running_loop()
    sock = _bound_socket(("127.0.0.1", 0))
    pending: dict[int, asyncio.Future[bytes]] = {}
    recv = sock.recv
    sendto = sock.sendto

    def drain() -> None:
        while True:
            try:
                data = recv(2048)
            except (BlockingIOError, InterruptedError):
                return
            (word,) = _unpack(data)
            if word & REPLY_BIT:
                fut = pending.pop(word & _MASK, None)
                if fut is not None and not fut.done():
                    fut.set_result(data)

    loop.add_reader(sock.fileno(), drain)

    async def call(i: int, data: bytes) -> bytes:
        fut = loop.create_future()
        pending[i] = fut
        timer = loop.call_later(timeout, _expire, fut)
        try:
            sendto(data, target)
            return await fut
        finally:
            timer.cancel()
            pending.pop(i, None)

    async def close() -> None:
        loop.remove_reader(sock.fileno())
        sock.close()

    return call, close


async def serve(
    variant: str, addr: tuple[str, int], ready: Callable[[Any], None], stop: asyncio.Future[None]
) -> None:
    loop = asyncio.get_running_loop()
    sock = _bound_socket(addr)
    recvfrom = sock.recvfrom
    sendto = sock.sendto
    pack = WORD.pack

    def drain() -> None:
        while True:
            try:
                data, peer = recvfrom(2048)
            except (BlockingIOError, InterruptedError):
                return
            (word,) = _unpack(data)
            try:
                sendto(pack(word | REPLY_BIT) + data[8:], peer)
            except BlockingIOError:
                pass  # the client's timeout covers a reply dropped here

    loop.add_reader(sock.fileno(), drain)
    try:
        ready(sock.getsockname())
        await stop
    finally:
        loop.remove_reader(sock.fileno())
        sock.close()
