"""Packet ids nobody can predict: what one peer sees says nothing of the ids sent to
another, or of the next ones.

Each datagram of ACK framing gets its own 56-bit id drawn at random: from the
operating system's cryptographic generator (:mod:`secrets`) by default, or from
a seeded :class:`random.Random` when a test asks for a repeatable run. Ids are
drawn in batches so that a call costs a list pop, not a system call.

Random ids may repeat: two datagrams from one sender share an id within the
receiver's dedup window with a chance of about ``n**2 / 2**57`` for ``n``
datagrams (``7e-8`` for 100,000). De-duplication stays sound all the same: the
receiver counts a datagram as a copy only if its id *and* its key match what it
delivered (see :mod:`.delivery_log`), so a colliding new message is delivered.
"""

from __future__ import annotations

import random
import secrets
import struct

from .framing import ID_MASK

__all__ = ["BATCH", "PacketIds"]

#: Ids drawn at once.
BATCH = 256

_UNPACK = struct.Struct(f">{BATCH}Q").unpack


class PacketIds:
    """A supply of random 56-bit packet ids; :meth:`draw` refills :attr:`ready`.

    The core pops ``ready`` inline on its hot paths and calls :meth:`draw` when
    it is empty (``ids.ready.pop() if ids.ready else ids.draw()``).
    """

    __slots__ = ("_rng", "ready")

    def __init__(self, seed: int | None = None) -> None:
        self._rng = None if seed is None else random.Random(seed ^ 0x5EED)
        self.ready: list[int] = []

    def draw(self) -> int:
        """One id, refilling the batch first."""
        rng = self._rng
        raw = secrets.token_bytes(8 * BATCH) if rng is None else rng.randbytes(8 * BATCH)
        ready = self.ready
        ready.extend(word & ID_MASK for word in _UNPACK(raw))
        return ready.pop()
