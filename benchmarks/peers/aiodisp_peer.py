"""aiodisp: a Dispatcher with :class:`IdPrefixAdapter`, in ACK or raw framing.

The client is ``Dispatcher.request``; the server is the same echo server as
``aiodisp bench`` (``async for`` over the dispatcher, ``notify_unreliable`` back).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from common import WORD

import aiodisp
from aiodisp._bench import serve_echo
from aiodisp.adapters import IdMessage, IdPrefixAdapter

VARIANTS = ("ack", "raw")
ECHO_MODE = {"ack": "ack", "raw": "raw"}
_MASK = (1 << 63) - 1


async def open_client(
    variant: str, target: tuple[str, int], timeout: float
) -> tuple[Callable[[int, bytes], Awaitable[bytes]], Callable[[], Awaitable[None]]]:
    adapter = IdPrefixAdapter()
    client = await aiodisp.open_udp(adapter, ("127.0.0.1", 0), framing=variant)
    request = client.request
    to_raw = adapter.msg_to_raw

    async def call(i: int, data: bytes) -> bytes:
        try:
            reply = await request(IdMessage(i, data[8:]), target, timeout=timeout)
        except aiodisp.RequestTimeout as exc:
            raise TimeoutError(str(exc)) from None
        return to_raw(reply)

    async def close() -> None:
        await client.close()

    return call, close


async def serve(
    variant: str, addr: tuple[str, int], ready: Callable[[Any], None], stop: asyncio.Future[None]
) -> None:
    await serve_echo(addr, variant, ready=ready, stop=stop)


__all__ = ["ECHO_MODE", "VARIANTS", "WORD", "open_client", "serve"]
