"""rpcudp: msgpack RPC over UDP (``RPCProtocol``); one remote method, ``echo``.

A request is ``0x00``, a 20-byte random id and ``msgpack([name, args])``; the reply
``0x01``, the id and ``msgpack(result)``. The 72-byte message is the one argument
and the server returns it with the reply flag set.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from common import REPLY_BIT, WORD
from rpcudp.protocol import RPCProtocol

VARIANTS = ("rpc",)
ECHO_MODE = {"rpc": "rpc"}


class EchoRPC(RPCProtocol):  # type: ignore[misc]
    def rpc_echo(self, sender: Any, data: bytes) -> bytes:
        (word,) = WORD.unpack_from(data)
        return WORD.pack(word | REPLY_BIT) + data[8:]


async def open_client(
    variant: str, target: tuple[str, int], timeout: float
) -> tuple[Callable[[int, bytes], Awaitable[bytes]], Callable[[], Awaitable[None]]]:
    loop = asyncio.get_running_loop()
    transport, proto = await loop.create_datagram_endpoint(
        lambda: RPCProtocol(wait_timeout=timeout), local_addr=("127.0.0.1", 0)
    )
    echo = proto.echo

    async def call(i: int, data: bytes) -> bytes:
        ok, reply = await echo(target, data)
        if not ok:
            raise TimeoutError("no rpcudp reply")
        return bytes(reply)

    async def close() -> None:
        transport.close()
        for fut, timer in list(proto._outstanding.values()):
            timer.cancel()
            if not fut.done():
                fut.cancel()

    return call, close


async def serve(
    variant: str, addr: tuple[str, int], ready: Callable[[Any], None], stop: asyncio.Future[None]
) -> None:
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(EchoRPC, local_addr=addr)
    try:
        ready(transport.get_extra_info("sockname"))
        await stop
    finally:
        transport.close()
