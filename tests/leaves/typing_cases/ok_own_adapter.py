"""A user's own adapter: a plain class with the methods, no subclassing, no import of ours."""

from __future__ import annotations

import asyncio
from typing import NamedTuple, assert_type

import aiodisp
import aiodisp.sync


class Line(NamedTuple):
    id: int
    text: str
    reply: bool = False


class LineAdapter:
    def msg_to_raw(self, msg: Line) -> bytes:
        return f"{msg.id} {'!' if msg.reply else '?'} {msg.text}".encode()

    def raw_to_msg(self, raw: bytes) -> Line:
        ident, mark, text = raw.decode("utf-8").split(" ", 2)
        return Line(int(ident), text, mark == "!")

    def msg_key(self, msg: Line) -> int:
        return msg.id

    def is_reply(self, msg: Line) -> bool:
        return msg.reply


as_protocol: aiodisp.MessageAdapter[Line] = LineAdapter()


async def main() -> None:
    a, b = await aiodisp.open_memory_pair(LineAdapter())
    assert_type(a, aiodisp.Dispatcher[Line])
    async with a, b:

        async def shout(msg: Line, addr: object) -> Line:
            return msg._replace(text=msg.text.upper(), reply=True)

        serving = asyncio.create_task(b.serve(shout))
        reply = await a.request(Line(1, "hello"), b.local_addr, timeout=5)
        assert_type(reply, Line)
        assert_type(reply.text, str)
        assert reply == Line(1, "HELLO", True)
    await serving


def blocking() -> None:
    s, t = aiodisp.sync.open_memory_pair(LineAdapter())
    assert_type(s, aiodisp.sync.SyncDispatcher[Line])
    with s, t:
        t.notify_unreliable(Line(2, "hi"), s.local_addr)
        assert_type(s.recv_from(timeout=5).msg.text, str)


if __name__ == "__main__":
    asyncio.run(main())
    blocking()
