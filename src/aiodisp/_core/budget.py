"""The retry budget: how many retransmissions a peer may get, with no I/O.

In the style of gRPC's retry throttling (proposal A6) and Finagle's
``RetryBudget``: retransmissions are allowed only as a fraction of the work
that is not a retransmission, so a dead or stalled server is not hit by a
retry storm however many calls wait on it. For each peer, over the last
:data:`WINDOW` seconds, retransmissions may be at most ``ratio`` times the
calls first sent to it, plus ``min_per_second`` for each of those seconds
(the *floor*, ``min_per_second * WINDOW``: what a peer that gets few calls
may still be retried). A retransmission the budget refuses is not sent; the
call keeps waiting for its answer (the one copy sent may still be answered)
until its timeout.

The account is kept where it costs nothing on the hot path: a call's first
send only bumps the peer's ``sends`` counter (in :class:`.congestion.Peer`);
:class:`RetryAccount` reads that counter when a retransmission asks, and marks
the time (at most once a second). First sends between two marks are counted
from the earlier mark, so they leave the window early, never late: the budget
errs on the side of fewer retransmissions.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

__all__ = ["WINDOW", "RetryAccount", "RetryBudget"]

#: Seconds over which first sends and retransmissions are counted.
WINDOW = 10.0
#: Marks and spending are kept per this many seconds.
_RESOLUTION = 1.0


@dataclass(frozen=True, slots=True)
class RetryBudget:
    """How many retransmissions a peer may get (``Dispatcher(retry_budget=...)``).

    Over the last 10 s, retransmissions to one peer are at most ``ratio``
    times the calls first sent to it, plus ``min_per_second`` for each second
    (so a peer that gets few calls may still be retried: ``floor`` per 10 s).
    A refused retransmission is not sent and counted in
    ``stats.budget_denied``; the call keeps waiting until its timeout.
    """

    ratio: float = 0.2
    min_per_second: float = 10.0

    def __post_init__(self) -> None:
        for name in ("ratio", "min_per_second"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise TypeError(f"{name} must be a number, not {value!r}")
            if not (value >= 0 and math.isfinite(value)):
                raise ValueError(f"{name} must be a finite number >= 0, not {value!r}")

    @property
    def floor(self) -> float:
        """Retransmissions allowed per window whatever the first sends (``min_per_second * 10``)."""
        return self.min_per_second * WINDOW

    def allowance(self, first_sends: int) -> float:
        """Retransmissions allowed over the window after ``first_sends`` first sends in it."""
        return self.ratio * first_sends + self.floor


class RetryAccount:
    """One peer's first sends and retransmissions over the last :data:`WINDOW` seconds.

    ``created`` is when the peer's first call was counted (its ``sends`` were 0).
    """

    __slots__ = ("_marks", "_spent", "_spent_total")

    def __init__(self, created: float) -> None:
        # (time, the peer's first sends so far): first sends after a mark count from it
        self._marks: deque[tuple[float, int]] = deque([(created, 0)])
        # [start of a RESOLUTION-long slot, retransmissions in it]
        self._spent: deque[list[float]] = deque()
        self._spent_total = 0

    def first_sends(self, sends: int, now: float) -> int:
        """First sends counted in the window now (``sends``: the peer's total so far)."""
        marks = self._marks
        horizon = now - WINDOW
        while marks and marks[0][0] <= horizon:
            marks.popleft()
        if not marks or now - marks[-1][0] >= _RESOLUTION:
            marks.append((now, sends))
        return sends - marks[0][1]

    def spent(self, now: float) -> int:
        """Retransmissions counted in the window now (a whole slot while any of it is in)."""
        spent = self._spent
        horizon = now - WINDOW - _RESOLUTION
        while spent and spent[0][0] <= horizon:
            self._spent_total -= int(spent.popleft()[1])
        return self._spent_total

    def withdraw(self, budget: RetryBudget, sends: int, now: float) -> bool:
        """Take one retransmission from the budget if it allows one now (True), else False."""
        if self.spent(now) + 1 > budget.allowance(self.first_sends(sends, now)):
            return False
        spent = self._spent
        if spent and now - spent[-1][0] < _RESOLUTION:
            spent[-1][1] += 1
        else:
            spent.append([now, 1])
        self._spent_total += 1
        return True
