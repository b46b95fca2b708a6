"""The blocking facade: the same mistakes, caught the same way."""

from __future__ import annotations

from typing import Any

import aiodisp.sync
from aiodisp.adapters import IdMessage, IdPrefixAdapter, JsonAdapter


def wants_dict(msg: dict[str, Any]) -> None: ...


def id_prefix(addr: object) -> None:
    s = aiodisp.sync.open_udp(IdPrefixAdapter())
    # E: arg-type "request" of "SyncDispatcher" ... "dict[str, int]"; expected "IdMessage"
    s.request({"id": 1}, addr)
    s.notify({"id": 1}, addr)  # E: arg-type "notify" of "SyncDispatcher" ... expected "IdMessage"
    # E: arg-type "notify_unreliable" of "SyncDispatcher" has incompatible type "bytes"
    s.notify_unreliable(b"raw bytes", addr)
    reply = s.request(IdMessage(1), addr)
    wants_dict(reply)  # E: arg-type "wants_dict" has incompatible type "IdMessage"
    wants_dict(s.recv_from().msg)  # E: arg-type "wants_dict" has incompatible type "IdMessage"
    for msg, _size, _peer in s:
        wants_dict(msg)  # E: arg-type "wants_dict" has incompatible type "IdMessage"

    def handler(msg: dict[str, Any], addr: object) -> dict[str, Any]:
        return msg

    # E: arg-type "serve" of "SyncDispatcher" ... expected "Callable[[IdMessage, Any], IdMessage
    s.serve(handler)


def json(addr: object) -> None:
    s, _ = aiodisp.sync.open_memory_pair(JsonAdapter())
    # E: arg-type "request" of "SyncDispatcher" ... "IdMessage"; expected "dict[str, Any]"
    s.request(IdMessage(1), addr)
    # E: assignment (expression has type "dict[str, Any]", variable has type "IdMessage")
    reply: IdMessage = s.request({"id": 1}, addr)
    assert reply
    # E: arg-type Argument "framing" to "open_udp" has incompatible type "Literal['tcp']"
    aiodisp.sync.open_udp(JsonAdapter(), framing="tcp")
