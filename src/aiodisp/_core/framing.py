"""The 8-byte header of ACK framing (SCION's historical reliable-UDP header).

One flags byte (0x01: ACK requested, 0x02: this datagram is an ACK, 0x04: this
datagram is a reply to the datagram whose id it carries), then a
7-byte big-endian packet id, then the adapter's bytes. The header is packed and
unpacked as one big-endian 64-bit word: flags in the top byte, id below.
"""

from __future__ import annotations

import struct
from typing import Literal

__all__ = [
    "FLAG_ACK",
    "FLAG_ACK_REQUESTED",
    "FLAG_REPLY",
    "Framing",
    "HEADER_SIZE",
    "ID_BITS",
    "ID_MASK",
    "ack_for",
    "pack_header",
    "pack_word",
    "unpack_header",
    "unpack_word",
]

#: How a dispatcher frames its datagrams: "ack" (this 8-byte header, then the adapter's
#: bytes) or "raw" (the adapter's bytes are the whole datagram).
Framing = Literal["ack", "raw"]

HEADER_SIZE = 8
FLAG_ACK_REQUESTED = 0x01
FLAG_ACK = 0x02
#: This datagram is a reply to the datagram whose packet id it carries (the id is the
#: request's, from the receiver's own id space, not a new one of the sender's).
FLAG_REPLY = 0x04
ID_BITS = 56
ID_MASK = (1 << ID_BITS) - 1

_WORD = struct.Struct(">Q")
pack_word = _WORD.pack
unpack_word = _WORD.unpack_from


def pack_header(flags: int, packet_id: int) -> bytes:
    """The header for ``flags`` and ``packet_id`` (which must fit in 56 bits)."""
    return pack_word((flags << ID_BITS) | packet_id)


def unpack_header(data: bytes) -> tuple[int, int]:
    """``(flags, packet_id)`` of a datagram at least :data:`HEADER_SIZE` long."""
    (word,) = unpack_word(data)
    return word >> ID_BITS, word & ID_MASK


def ack_for(packet_id: int) -> bytes:
    """The whole ACK datagram for ``packet_id``."""
    return pack_word((FLAG_ACK << ID_BITS) | packet_id)
