"""The async API: each marked line sends, or uses, the wrong message type."""

from __future__ import annotations

from typing import Any

import aiodisp
from aiodisp.adapters import IdMessage, IdPrefixAdapter, JsonAdapter


def wants_dict(msg: dict[str, Any]) -> None: ...


def wants_id(msg: IdMessage) -> None: ...


async def id_prefix(addr: object) -> None:
    d = await aiodisp.open_udp(IdPrefixAdapter())
    # E: arg-type "request" of "Dispatcher" ... type "dict[str, int]"; expected "IdMessage"
    await d.request({"id": 1}, addr)
    await d.notify({"id": 1}, addr)  # E: arg-type "notify" of "Dispatcher" ... expected "IdMessage"
    # E: arg-type "notify_unreliable" of "Dispatcher" has incompatible type "bytes"
    await d.notify_unreliable(b"raw bytes", addr)
    d.send_nowait({"id": 1}, addr)  # E: arg-type "send_nowait" of "Dispatcher" ... "IdMessage"
    reply = await d.request(IdMessage(1), addr)
    wants_dict(reply)  # E: arg-type "wants_dict" has incompatible type "IdMessage"
    reply["id"]  # E: call-overload No overload variant of "__getitem__" of "tuple"
    got = await d.recv_from()
    wants_dict(got.msg)  # E: arg-type "wants_dict" has incompatible type "IdMessage"
    msg, _size, _peer = got
    wants_dict(msg)  # E: arg-type "wants_dict" has incompatible type "IdMessage"
    async for received in d:
        wants_dict(received.msg)  # E: arg-type "wants_dict" has incompatible type "IdMessage"

    async def handler(msg: dict[str, Any], addr: object) -> dict[str, Any]:
        return msg

    await d.serve(handler)  # E: arg-type "serve" of "Dispatcher" has incompatible type


async def json(addr: object) -> None:
    d = await aiodisp.open_unix(JsonAdapter(), "/tmp/x.sock")
    # E: arg-type "request" of "Dispatcher" ... type "IdMessage"; expected "dict[str, Any]"
    await d.request(IdMessage(1), addr)
    # E: assignment (expression has type "dict[str, Any]", variable has type "IdMessage")
    reply: IdMessage = await d.request({"id": 1}, addr)
    # E: arg-type "wants_id" has incompatible type "dict[str, Any]"; expected "IdMessage"
    wants_id((await d.recv_from()).msg)
    wants_id(reply)
    # E: arg-type Argument "framing" to "open_memory_pair" has incompatible type "Literal['tcp']"
    await aiodisp.open_memory_pair(JsonAdapter(), framing="tcp")
