from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aiodisp._core.framing import (
    FLAG_ACK,
    FLAG_ACK_REQUESTED,
    HEADER_SIZE,
    ID_MASK,
    ack_for,
    pack_header,
    unpack_header,
)


def test_header_layout_is_flags_byte_then_big_endian_id() -> None:
    header = pack_header(FLAG_ACK_REQUESTED, 0x0102030405060708 & ID_MASK)
    assert header == bytes([0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08])
    assert len(header) == HEADER_SIZE


def test_ack_is_a_bare_header_with_the_ack_flag() -> None:
    assert ack_for(5) == bytes([FLAG_ACK, 0, 0, 0, 0, 0, 0, 5])


@given(st.integers(0, 255), st.integers(0, ID_MASK))
def test_header_round_trips(flags: int, packet_id: int) -> None:
    assert unpack_header(pack_header(flags, packet_id)) == (flags, packet_id)


def test_unpack_needs_eight_bytes() -> None:
    import struct

    with pytest.raises(struct.error):
        unpack_header(b"\x01\x02")
