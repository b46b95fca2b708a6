"""aiodisp: a Dispatcher with :class:`IdPrefixAdapter`, in ACK or raw framing.

The client is ``Dispatcher.request``; the server is the same echo server as
``aiodisp bench`` (``async for`` over the dispatcher, ``notify_unreliable`` back).
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Awaitable, Callable
from typing import Any

from common import WORD

import aiodisp
from aiodisp.adapters import IdMessage, IdPrefixAdapter
from aiodisp.cli.echo import serve_echo

VARIANTS = ("ack", "raw")
ECHO_MODE = {"ack": "ack", "raw": "raw"}
_MASK = (1 << 63) - 1
#: Dispatcher options of the client, as JSON (``client_instructions.py --options``):
#: ``{"congestion": false}`` measures the client without its congestion window.
OPTIONS: dict[str, Any] = json.loads(os.environ.get("AIODISP_BENCH_OPTIONS", "{}"))


async def open_client(
    variant: str, target: tuple[str, int], timeout: float
) -> tuple[Callable[[int, bytes], Awaitable[Any]], Callable[[], Awaitable[None]]]:
    adapter = IdPrefixAdapter()
    client = await aiodisp.open_udp(adapter, ("127.0.0.1", 0), framing=variant, **OPTIONS)
    request = client.request

    # What an application writes: build the message, await the reply message. A
    # plain function returning request()'s coroutine adds no frame of its own, and
    # RequestTimeout is a TimeoutError already.
    def call(i: int, data: bytes) -> Awaitable[Any]:
        return request(IdMessage(i, data[8:]), target, timeout=timeout)

    async def close() -> None:
        await client.close()

    return call, close


async def serve(
    variant: str, addr: tuple[str, int], ready: Callable[[Any], None], stop: asyncio.Future[None]
) -> None:
    await serve_echo(addr, variant, ready=ready, stop=stop)


def check_reply(i: int, data: bytes, reply: IdMessage) -> bool:
    """A correct echo, checked on the message itself (no re-encoding on the clock)."""
    return reply.id == i and reply.reply and reply.payload == data[8:]


__all__ = ["ECHO_MODE", "VARIANTS", "WORD", "check_reply", "open_client", "serve"]
