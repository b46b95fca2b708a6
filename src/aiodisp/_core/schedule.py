"""When each pending call next needs attention: the timer queue of the core.

A call's next event is a retransmission or the end of its wait (``p.due``).
Calls that have a retry policy live in a heap of ``(due, seq, call)``. Calls
sent once, whose one event is their deadline, go to a FIFO *lane* per timeout
value: calls made with the same timeout expire in the order they were made, so
a deque keeps them sorted for free (no tuple, no heap sift per call). Past
:data:`MAX_LANES` distinct timeouts, such calls use the heap too.

A call that finishes early stays where it is (it is *stale*) until it reaches
the front or until stale entries are more than half of all entries, when they
are swept out: the queue holds about twice the pending calls at most, whatever
the call rate and the timeouts.
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque
from typing import Protocol


class Scheduled(Protocol):
    due: float
    deadline: float
    done: bool


MAX_LANES = 8
_SWEEP_MIN = 1024


class Schedule:
    __slots__ = ("_heap", "_lanes", "_seq", "stale")

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Scheduled]] = []
        self._lanes: dict[float, deque[Scheduled]] = {}
        self._seq = itertools.count()
        #: entries of calls that have finished (bumped by the owner when one does)
        self.stale = 0

    def add(self, call: Scheduled) -> None:
        """Schedule ``call`` at ``call.due``."""
        heapq.heappush(self._heap, (call.due, next(self._seq), call))
        if self.stale > _SWEEP_MIN:
            self._sweep()

    def add_final(self, call: Scheduled, timeout: float) -> None:
        """Schedule a call whose only event is its deadline, ``timeout`` after now."""
        lane = self._lanes.get(timeout)
        if lane is None:
            if len(self._lanes) >= MAX_LANES:
                self.add(call)
                return
            lane = self._lanes[timeout] = deque()
        # Calls mostly finish in the order they were made: drop the finished ones
        # at the front as we go, so a sweep is rarely needed.
        while lane and lane[0].done:
            lane.popleft()
            self.stale -= 1
        lane.append(call)
        if self.stale > _SWEEP_MIN:
            self._sweep()

    def next_due(self) -> float | None:
        """The earliest due time of a call still pending, or None."""
        when: float | None = None
        heap = self._heap
        while heap and heap[0][2].done:
            heapq.heappop(heap)
            self.stale -= 1
        if heap:
            when = heap[0][0]
        for lane in self._lanes.values():
            while lane and lane[0].done:
                lane.popleft()
                self.stale -= 1
            if lane and (when is None or lane[0].deadline < when):
                when = lane[0].deadline
        return when

    def pop_due(self, now: float) -> list[Scheduled]:
        """Take out every pending call due at ``now`` or before, earliest first per queue."""
        due: list[Scheduled] = []
        heap = self._heap
        while heap and heap[0][0] <= now:
            call = heapq.heappop(heap)[2]
            if call.done:
                self.stale -= 1
            else:
                due.append(call)
        for lane in self._lanes.values():
            while lane and (lane[0].done or lane[0].deadline <= now):
                call = lane.popleft()
                if call.done:
                    self.stale -= 1
                else:
                    due.append(call)
        if self.stale > _SWEEP_MIN:
            self._sweep()
        return due

    def _sweep(self) -> None:
        if self.stale * 2 <= len(self):
            return
        self._heap = [item for item in self._heap if not item[2].done]
        heapq.heapify(self._heap)
        for timeout, lane in self._lanes.items():
            self._lanes[timeout] = deque(call for call in lane if not call.done)
        self.stale = 0

    def clear(self) -> None:
        self._heap.clear()
        self._lanes.clear()
        self.stale = 0

    def __len__(self) -> int:
        return len(self._heap) + sum(len(lane) for lane in self._lanes.values())
