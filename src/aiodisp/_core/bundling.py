"""Bundles: several ACK-framed datagrams to one peer carried in one (``coalesce=True``).

A bundle is the byte :data:`FLAG_BUNDLE` followed by records, each a 2-byte
big-endian length and then one whole ACK-framed datagram (header and adapter
bytes, exactly as it would travel alone). So a receiver takes a bundle apart
and handles each record as the datagram it is: its packet id, ACK,
retransmission and de-duplication are its own. A bundle holds at least two
records (one frame travels as itself), no record is empty and none is a bundle.

:class:`Bundler` is the sender's half: frames queued per destination over one
event-loop iteration, packed into bundles of at most ``limit`` bytes. It only
gathers and packs; the driver decides when to drain and sends the datagrams.
"""

from __future__ import annotations

import struct
from typing import Any

__all__ = [
    "BUNDLE_LIMIT",
    "FLAG_BUNDLE",
    "MIN_BUNDLE",
    "RECORD_OVERHEAD",
    "Bundler",
    "pack_bundle",
    "pack_length",
    "split_bundle",
]

Address = Any

#: The first byte of a bundle (no flag combination of a single datagram has this bit).
FLAG_BUNDLE = 0x08
#: The largest bundle sent by default, in bytes: the UDP payload that fits the
#: IPv6 minimum MTU (1280) less its IPv6 and UDP headers (48) with room to spare
#: for a tunnel's own header, as QUIC's 1200-byte floor does.
BUNDLE_LIMIT = 1200
#: How many bundles a destination's frames of one iteration are cut into, aimed for
#: (see :class:`Bundler`): the first leaves while the rest are still being made.
#: End to end on uvloop (e2e, ACK framing, benchmarks/run.py), 16 in flight:
#: 26-27k req/s and p50 0.54-0.56 ms with whole-iteration bundles (0), 36-45k and
#: 0.30-0.37 ms with 4; at 256 in flight 47-62k with 0, 63k with 4.
PIPELINE = 4
#: Bytes a record adds to the datagram it carries (its length).
RECORD_OVERHEAD = 2
#: The shortest valid bundle: the marker and two records of 8-byte datagrams.
MIN_BUNDLE = 1 + 2 * (RECORD_OVERHEAD + 8)

_LEN = struct.Struct(">H")
_pack_len = _LEN.pack
#: A record's length field (the driver's inlined Bundler.add packs with it too).
pack_length = _pack_len
_unpack_len = _LEN.unpack_from
_MARK = bytes([FLAG_BUNDLE])
#: The shortest record's datagram: an ACK-framed header.
_MIN_RECORD = 8


def pack_bundle(frames: list[bytes]) -> bytes:
    """The datagram carrying ``frames``: a lone frame is itself, more are a bundle."""
    if len(frames) == 1:
        return frames[0]
    parts = [_MARK]
    for frame in frames:
        parts.append(_pack_len(len(frame)))
        parts.append(frame)
    return b"".join(parts)


def split_bundle(data: bytes) -> list[bytes] | str:
    """The datagrams of bundle ``data``, or why it is malformed (nothing of it is used).

    Malformed: fewer than two records, a record shorter than a header, a
    record that is itself a bundle, or bytes left over (a truncated record).
    """
    records: list[bytes] = []
    pos, end = 1, len(data)
    while pos < end:
        if pos + RECORD_OVERHEAD > end:
            return "truncated bundle"
        (n,) = _unpack_len(data, pos)
        pos += RECORD_OVERHEAD
        stop = pos + n
        if n < _MIN_RECORD:
            return f"{n}-byte record in a bundle"
        if stop > end:
            return "truncated bundle"
        if data[pos] == FLAG_BUNDLE:
            return "bundle inside a bundle"
        records.append(data[pos:stop])
        pos = stop
    if len(records) < 2:
        return "bundle of one record"
    return records


class Bundler:
    """Frames to each destination, gathered until :meth:`drain` packs them.

    :meth:`add` queues a frame; a destination's frames are packed greedily into
    bundles of at most ``limit`` bytes, in the order they were added. A frame
    too large to share a bundle travels alone, in its place in that order.
    When a destination's open bundle cannot take the next frame it is
    *closed*: ready to send at once (:attr:`ready`), which bounds what one
    destination holds to one bundle however much is sent before a drain.

    A bundle also closes once it holds ``max(2, n // pipeline)`` frames, ``n``
    being the frames per destination of the last drain's iteration. One bundle
    per iteration would put both peers in lockstep (each idle while the other
    works through the whole batch); a few per iteration let the peer start on
    the first while the rest are made. ``pipeline=0``: bundles fill up to the
    limit.
    """

    __slots__ = ("_closed_frames", "limit", "max_parts", "open", "pipeline", "ready")

    def __init__(self, limit: int = BUNDLE_LIMIT, *, pipeline: int = PIPELINE) -> None:
        if limit < MIN_BUNDLE:
            raise ValueError(f"a bundle limit must be at least {MIN_BUNDLE} bytes")
        self.limit = limit
        #: bundles per destination per iteration to aim for (0: as large as the limit)
        self.pipeline = pipeline
        #: the parts (1 + 2 per frame) an open bundle may have before it closes
        self.max_parts = 1 << 30
        self._closed_frames = 0
        #: destination -> [bytes so far, parts]: the bundle still open to more frames,
        #: its parts ready to join (the marker, then each frame's length and the frame)
        self.open: dict[Address, list[Any]] = {}
        #: (datagram, addr, frames) closed since the last drain, oldest first
        self.ready: list[tuple[bytes, Address, list[bytes]]] = []

    def add(self, frame: bytes, addr: Address) -> bool:
        """Queue ``frame`` for ``addr``; True when something is now ready to send
        (a bundle closed: the caller may send :attr:`ready` now or at the drain)."""
        n = len(frame)
        size = n + RECORD_OVERHEAD
        entry = self.open.get(addr)
        if entry is None:
            if size + 1 > self.limit:
                self.ready.append((frame, addr, [frame]))
                return True
            self.open[addr] = [1 + size, [_MARK, _pack_len(n), frame]]
            return False
        total = entry[0] + size
        if total <= self.limit and len(entry[1]) < self.max_parts:
            entry[0] = total
            parts = entry[1]
            parts.append(_pack_len(n))
            parts.append(frame)
            return False
        self.ready.append(_packed(addr, entry[1]))
        self._closed_frames += len(entry[1]) // 2
        if size + 1 > self.limit:
            del self.open[addr]
            self.ready.append((frame, addr, [frame]))
        else:
            entry[0] = 1 + size
            entry[1] = [_MARK, _pack_len(n), frame]
        return True

    def take_ready(self) -> list[tuple[bytes, Address, list[bytes]]]:
        """The closed bundles, oldest first; they are no longer held."""
        ready = self.ready
        self.ready = []
        return ready

    def drain(self) -> list[tuple[bytes, Address, list[bytes]]]:
        """Everything held, packed: ``(datagram, addr, frames)``, oldest first per
        destination; the bundler is empty afterwards (:attr:`open` is the same dict,
        cleared)."""
        out = self.take_ready()
        if self.pipeline and self.open:  # (an iteration that sent nothing says nothing)
            frames = self._closed_frames + sum(len(e[1]) // 2 for e in self.open.values())
            cap = frames // (self.pipeline * len(self.open))
            self.max_parts = 1 + 2 * max(2, cap)
            self._closed_frames = 0
        for addr, entry in self.open.items():
            out.append(_packed(addr, entry[1]))
        self.open.clear()
        return out

    def __len__(self) -> int:
        """Frames held."""
        return sum(len(f) for _, _, f in self.ready) + sum(
            len(e[1]) // 2 for e in self.open.values()
        )


def _packed(addr: Address, parts: list[bytes]) -> tuple[bytes, Address, list[bytes]]:
    """``(datagram, addr, frames)`` of an open bundle's parts."""
    frames = parts[2::2]
    if len(frames) == 1:
        return frames[0], addr, frames
    return b"".join(parts), addr, frames
