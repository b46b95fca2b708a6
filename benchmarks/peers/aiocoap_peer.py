"""aiocoap: CoAP POST to ``/echo``, confirmable (``con``) or non-confirmable (``non``).

The 72-byte message is the CoAP payload; the server's resource answers 2.05 with
the message, reply flag set.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import aiocoap
import aiocoap.resource
from aiocoap import CON, NON, POST, Context, Message
from common import REPLY_BIT, WORD

VARIANTS = ("con", "non")
ECHO_MODE = {"con": "coap", "non": "coap"}


async def open_client(
    variant: str, target: tuple[str, int], timeout: float
) -> tuple[Callable[[int, bytes], Awaitable[bytes]], Callable[[], Awaitable[None]]]:
    logging.getLogger("coap").setLevel(logging.CRITICAL)
    ctx = await Context.create_client_context(transports=["udp6"])
    uri = f"coap://{target[0]}:{target[1]}/echo"
    mtype = CON if variant == "con" else NON

    async def call(i: int, data: bytes) -> bytes:
        msg = Message(code=POST, mtype=mtype, uri=uri, payload=data)
        try:
            async with asyncio.timeout(timeout):
                response = await ctx.request(msg).response
        except aiocoap.error.Error as exc:
            raise OSError(str(exc)) from None
        return bytes(response.payload)

    async def close() -> None:
        await ctx.shutdown()

    return call, close


class EchoResource(aiocoap.resource.Resource):  # type: ignore[misc]
    async def render_post(self, request: Message) -> Message:
        data = request.payload
        (word,) = WORD.unpack_from(data)
        return Message(code=aiocoap.CONTENT, payload=WORD.pack(word | REPLY_BIT) + data[8:])


async def serve(
    variant: str, addr: tuple[str, int], ready: Callable[[Any], None], stop: asyncio.Future[None]
) -> None:
    logging.getLogger("coap-server").setLevel(logging.CRITICAL)
    site = aiocoap.resource.Site()
    site.add_resource(["echo"], EchoResource())
    ctx = await Context.create_server_context(site, bind=addr, transports=["udp6"])
    try:
        ready(addr)
        await stop
    finally:
        await ctx.shutdown()
