"""Adapters that are not MessageAdapters, and a user's adapter used with the wrong type."""

from __future__ import annotations

from typing import NamedTuple

import aiodisp
import aiodisp.sync


class Line(NamedTuple):
    id: int
    text: str


class LineAdapter:
    def msg_to_raw(self, msg: Line) -> bytes:
        return msg.text.encode()

    def raw_to_msg(self, raw: bytes) -> Line:
        return Line(0, raw.decode())

    def msg_key(self, msg: Line) -> int:
        return msg.id


class NoKey:
    def msg_to_raw(self, msg: Line) -> bytes:
        return msg.text.encode()

    def raw_to_msg(self, raw: bytes) -> Line:
        return Line(0, raw.decode())


class Mixed:
    def msg_to_raw(self, msg: str) -> bytes:
        return msg.encode()

    def raw_to_msg(self, raw: bytes) -> bytes:  # not the type msg_to_raw takes
        return raw

    def msg_key(self, msg: str) -> str:
        return msg


async def main(addr: object) -> None:
    d = await aiodisp.open_udp(LineAdapter())
    await d.request("hello", addr)  # E: arg-type "request" of "Dispatcher" ... expected "Line"
    reply = await d.request(Line(1, "hi"), addr)
    print(reply.text.upper())
    # E: assignment (expression has type "str", variable has type "int")
    number: int = reply.text
    print(number)
    # E: arg-type Argument 1 to "open_udp" has incompatible type "NoKey"; expected "MessageAdapter[
    await aiodisp.open_udp(NoKey())
    # E: arg-type Argument 1 to "open_udp" has incompatible type "NoKey"; expected "MessageAdapter[
    aiodisp.sync.open_udp(NoKey())
    await aiodisp.open_udp(Mixed())  # E: misc Cannot infer value of type parameter "M"
    # E: assignment (expression has type "LineAdapter", variable has type "MessageAdapter[bytes]")
    wrong: aiodisp.MessageAdapter[bytes] = LineAdapter()
    print(wrong)
