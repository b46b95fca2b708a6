"""The small adapters the tests speak."""

from __future__ import annotations

import struct
from typing import Any

__all__ = ["FlagAdapter", "KeyAdapter"]


class KeyAdapter:
    """Messages are (key, payload) tuples: 8-byte key then payload; no is_reply."""

    def msg_to_raw(self, msg: tuple[int, bytes]) -> bytes:
        return struct.pack(">Q", msg[0]) + msg[1]

    def raw_to_msg(self, raw: bytes) -> tuple[int, bytes]:
        return struct.unpack_from(">Q", raw)[0], bytes(raw[8:])

    def msg_key(self, msg: tuple[int, bytes]) -> int:
        return msg[0]


class FlagAdapter(KeyAdapter):
    """(key, payload, is_reply) triples: a flag byte tells replies apart."""

    def msg_to_raw(self, msg: Any) -> bytes:
        payload: bytes = msg[1]
        return struct.pack(">QB", msg[0], 1 if msg[2] else 0) + payload

    def raw_to_msg(self, raw: bytes) -> Any:
        key, flag = struct.unpack_from(">QB", raw)
        return key, bytes(raw[9:]), bool(flag)

    def is_reply(self, msg: Any) -> bool:
        return bool(msg[2])
