"""A small two-layer adapter for the message-layer tests (CoAP's shape, none of its bytes).

A message is ``(kind, tx, key, payload)``: ``kind`` one of "M" (a message for
the application), "R" (a reply), "A" (an ACK), "X" (a reject), "D" (drop me);
``tx`` the transaction key (None: it has none); ``key`` the request/reply key.
``ack_for`` answers an "M" (unless ``piggyback``), an "R" and a "D" that have a
transaction key with an "A" naming it.
"""

from __future__ import annotations

import struct
from typing import Any

import aiodisp

__all__ = ["ClassifyFlagAdapter", "Msg", "TwoLayerAdapter"]

Msg = tuple[str, "int | None", int, bytes]

KINDS = {"M": aiodisp.Kind.MESSAGE, "R": aiodisp.Kind.REPLY, "A": aiodisp.Kind.ACK,
         "X": aiodisp.Kind.REJECT, "D": aiodisp.Kind.DROP}
_HEAD = struct.Struct(">cHQ")
_NONE = 0xFFFF


class TwoLayerAdapter:
    def __init__(self, *, piggyback: bool = False, acks: bool = True) -> None:
        self.piggyback = piggyback
        self.acks = acks

    def msg_to_raw(self, msg: Any) -> bytes:
        kind, tx, key, payload = msg
        raw: bytes = _HEAD.pack(kind.encode(), _NONE if tx is None else tx, key) + payload
        return raw

    def raw_to_msg(self, raw: bytes) -> Any:
        kind, tx, key = _HEAD.unpack_from(raw)
        return kind.decode(), None if tx == _NONE else tx, key, bytes(raw[_HEAD.size:])

    def msg_key(self, msg: Any) -> int:
        return int(msg[2])

    def classify(self, msg: Any) -> aiodisp.Kind:
        return KINDS[msg[0]]

    def transaction_key(self, msg: Any) -> int | None:
        tx: int | None = msg[1]
        return tx

    def ack_for(self, msg: Any) -> Any:
        kind, tx = msg[0], msg[1]
        if not self.acks or tx is None or kind not in "MRD" or (kind == "M" and self.piggyback):
            return None
        return ("A", tx, 0, b"")


class ClassifyFlagAdapter:
    """tests.helpers.adapters.FlagAdapter's messages, told apart by classify, not is_reply."""

    def msg_to_raw(self, msg: Any) -> bytes:
        payload: bytes = msg[1]
        return struct.pack(">QB", msg[0], 1 if msg[2] else 0) + payload

    def raw_to_msg(self, raw: bytes) -> Any:
        key, flag = struct.unpack_from(">QB", raw)
        return key, bytes(raw[9:]), bool(flag)

    def msg_key(self, msg: Any) -> int:
        return int(msg[0])

    def classify(self, msg: Any) -> aiodisp.Kind:
        return aiodisp.Kind.REPLY if msg[2] else aiodisp.Kind.MESSAGE
