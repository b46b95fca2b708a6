"""Ready-made message adapters.

An adapter is any object with ``msg_to_raw(msg) -> bytes``,
``raw_to_msg(raw) -> msg``, ``msg_key(msg) -> hashable`` and, optionally,
``is_reply(msg) -> bool``; these classes are examples you can use as they are.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

__all__ = ["IdMessage", "IdPrefixAdapter"]


class IdMessage(NamedTuple):
    """A message of :class:`IdPrefixAdapter`: a 64-bit id, a reply flag and a payload."""

    id: int
    payload: bytes = b""
    reply: bool = False


class IdPrefixAdapter:
    """Binary messages: an 8-byte big-endian word (bit 63: reply flag, bits 0-62: id)
    followed by the payload. The id is the key; the flag tells replies apart, so a
    peer's request is never mistaken for a reply to one of ours.
    """

    _word = struct.Struct(">Q")
    _REPLY = 1 << 63

    def msg_to_raw(self, msg: IdMessage) -> bytes:
        word = msg.id | self._REPLY if msg.reply else msg.id
        return self._word.pack(word) + msg.payload

    def raw_to_msg(self, raw: bytes) -> IdMessage:
        (word,) = self._word.unpack_from(raw)
        return IdMessage(word & ~self._REPLY, raw[8:], bool(word & self._REPLY))

    def msg_key(self, msg: IdMessage) -> int:
        return msg.id

    def is_reply(self, msg: IdMessage) -> bool:
        return msg.reply
