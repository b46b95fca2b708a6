"""Unguessable request ids.

A reply is accepted only from the address its request went to, but UDP source
addresses can be forged by anyone off the path. What stops a forged reply then
is the key: an attacker must guess it while the request is pending. Keys drawn
from a counter or a clock are guessed at once; keys drawn here, from the
operating system's cryptographic generator (:mod:`secrets`), are not.

>>> from aiodisp.ids import RequestIds, random_id
>>> 0 <= random_id() < 2**63
True
>>> ids = RequestIds(bits=16)          # e.g. DNS message ids
>>> all(0 <= next(ids) < 2**16 for _ in range(10))
True

See ``docs/security.md`` for the threat model.
"""

from __future__ import annotations

import secrets
from collections import OrderedDict
from collections.abc import Iterator

__all__ = ["RequestIds", "random_id"]

#: The widest id :func:`random_id` draws (a Python int has no limit; 1024 bits is plenty).
MAX_BITS = 1024


def random_id(bits: int = 63) -> int:
    """A uniformly random id in ``[0, 2**bits)`` from the system's secure generator.

    63 bits by default: the id of :class:`aiodisp.adapters.IdPrefixAdapter`
    (whose top bit is the reply flag). With 63 random bits an off-path attacker
    who sends a million forged replies while a request waits has about one
    chance in 10**13 of hitting its key.
    """
    _check_bits(bits)
    return secrets.randbits(bits)


class RequestIds(Iterator[int]):
    """An endless iterator of random ids, none repeated among the last ``window`` drawn.

    Random ids may collide; two pending requests with one key are refused
    (:class:`~aiodisp.DuplicateKeyError`). With 63 bits that never happens in
    practice; with narrow ids (16-bit DNS ids) it does, so this iterator
    redraws an id that was handed out among the last ``window`` ones. Keep
    ``window`` at least the number of requests you have in flight at once.
    It may not exceed half the id space, so a fresh id is always found quickly.
    Memory is bounded by ``window``.
    """

    __slots__ = ("_bits", "_recent", "_window")

    def __init__(self, bits: int = 63, *, window: int = 4096) -> None:
        _check_bits(bits)
        if window < 0:
            raise ValueError("window must not be negative")
        if window > (1 << bits) // 2:
            raise ValueError(
                f"a window of {window} ids is more than half of the {bits}-bit id space"
            )
        self._bits = bits
        self._window = window
        self._recent: OrderedDict[int, None] = OrderedDict()

    @property
    def bits(self) -> int:
        return self._bits

    @property
    def window(self) -> int:
        return self._window

    def __next__(self) -> int:
        recent = self._recent
        bits = self._bits
        new = secrets.randbits(bits)
        while new in recent:
            new = secrets.randbits(bits)
        if self._window:
            if len(recent) >= self._window:
                recent.popitem(last=False)
            recent[new] = None
        return new

    def __iter__(self) -> RequestIds:
        return self

    def __repr__(self) -> str:
        return f"RequestIds(bits={self._bits}, window={self._window})"


def _check_bits(bits: int) -> None:
    if isinstance(bits, bool) or not isinstance(bits, int):
        raise TypeError(f"bits must be an int, not {type(bits).__name__}")
    if not 1 <= bits <= MAX_BITS:
        raise ValueError(f"bits must be between 1 and {MAX_BITS}, not {bits}")
