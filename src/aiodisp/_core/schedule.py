"""When each pending call next needs attention: the timer queue of the core.

A call's next event is a retransmission or the end of its wait (``p.due``).
Calls whose next event comes a fixed wait after they were made go to a FIFO
*lane* per wait: calls sent once (their one event is their deadline, one
timeout after), and calls' first retransmissions (the core gives calls with
the same policy the same first wait). Calls made with the same wait are due in
the order they were made, so an insertion-ordered dict keeps them sorted for
free (no tuple, no heap sift per call), and a call that finishes early leaves
its lane at once (:meth:`Schedule.finished`, one dict deletion). Later
retransmissions (backoff), and calls past :data:`MAX_LANES` distinct waits in
use at once, live in a heap of ``(due, tie, call)`` (a lane no call is in is
let go when a new wait needs its place). ``tie`` orders calls due at the same
time: the owner's own number for the call when it has one (a packet id, an
int the call holds anyway), else the schedule's next sequence number (an int
more per entry: 32 B).

A call that finishes early stays in the heap (it is *stale*) until it reaches
the front or until stale entries are more than half of the heap, when they
are swept out: the heap holds about twice its pending calls at most, whatever
the call rate and the timeouts.
"""

from __future__ import annotations

import heapq
import itertools
from sys import getsizeof
from typing import Protocol

__all__ = ["Lane", "MAX_LANES", "Schedule", "Scheduled"]


class Scheduled(Protocol):
    due: float
    deadline: float
    done: bool
    #: the lane holding the call, or None (in the heap, or not scheduled)
    lane: dict[Scheduled, None] | None


MAX_LANES = 8
_SWEEP_MIN = 1024
# a lane's table past this many bytes a call (and _SPARSE_MIN) is copied: a compact
# dict is ~35-50 B a call, so that is a table 8x larger than it needs
_SPARSE_BYTES = 400
_SPARSE_MIN = 4096

Lane = dict[Scheduled, None]


class Schedule:
    __slots__ = ("_heap", "_seq", "lanes", "stale")

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Scheduled]] = []
        #: wait -> its lane (the same dict for the schedule's life: owners may bind
        #: its ``get``)
        self.lanes: dict[float, Lane] = {}
        self._seq = itertools.count()
        #: heap entries of calls that have finished (see :meth:`finished`)
        self.stale = 0

    def add(self, call: Scheduled, tie: int = -1) -> None:
        """Schedule ``call`` at ``call.due`` (in the heap).

        ``tie`` (if not negative) is a number of the call's own that no other call
        in the schedule has (a packet id): it breaks ties of ``due`` with no int
        made for the entry. Otherwise the schedule numbers the entry itself (with
        negative numbers, apart from the owner's).
        """
        call.lane = None
        if tie < 0:
            tie = ~next(self._seq)
        heapq.heappush(self._heap, (call.due, tie, call))
        if self.stale > _SWEEP_MIN:
            self._sweep()

    def lane(self, timeout: float) -> Lane | None:
        """The lane of calls due ``timeout`` after they are made (None past
        MAX_LANES waits).

        The owner adds a call made at ``now`` and due at ``now + timeout`` with
        ``lane[call] = None; call.lane = lane``, after every call it added to
        that lane before, so that lanes stay in order of ``due`` (:meth:`add_final`
        does it for a call whose due is its deadline).
        """
        lanes = self.lanes
        lane = lanes.get(timeout)
        if lane is None:
            if len(lanes) >= MAX_LANES:
                # Let go of lanes no call is in, so that a timeout in use now gets one
                # (a burst of odd timeouts must not send every later call to the heap).
                for empty in [t for t, calls in lanes.items() if not calls]:
                    del lanes[empty]
                if len(lanes) >= MAX_LANES:
                    return None
            lane = lanes[timeout] = {}
        return lane

    def add_final(self, call: Scheduled, timeout: float, tie: int = -1) -> None:
        """Schedule a call whose only event is its deadline, ``timeout`` after now
        (``tie``: as :meth:`add` takes it)."""
        lane = self.lane(timeout)
        if lane is None:
            self.add(call, tie)
        else:
            lane[call] = None
            call.lane = lane

    def finished(self, call: Scheduled) -> None:
        """Tell the schedule that a call it holds ended before its event came."""
        lane = call.lane
        if lane is None:
            self.stale += 1
        else:
            del lane[call]
            call.lane = None

    def next_due(self) -> float | None:
        """The earliest due time of a call still pending, or None."""
        when: float | None = None
        heap = self._heap
        while heap and heap[0][2].done:
            heapq.heappop(heap)
            self.stale -= 1
        if heap:
            when = heap[0][0]
        for lane in self.lanes.values():
            for call in lane:  # the first is the earliest
                if when is None or call.due < when:
                    when = call.due
                break
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
        lanes = self.lanes
        for wait, lane in lanes.items():
            first = len(due)
            for call in lane:
                if call.due > now:
                    break
                due.append(call)
            if len(due) == first:
                continue
            for call in itertools.islice(due, first, None):
                del lane[call]
                call.lane = None
            # A dict keeps its table's size when entries leave it: a lane a burst has
            # left, or mostly left, is copied, to let go of the burst's room (a slot is
            # ~30 B; 52 B a pending call in benchmarks/memory.py, where the burst's first
            # retransmissions moved it to the heap with a tail still in the lane)
            if getsizeof(lane) > _SPARSE_BYTES * len(lane) + _SPARSE_MIN:
                lane = lanes[wait] = dict(lane)  # (a copy of a sparse dict is compact)
                for call in lane:
                    call.lane = lane
        if self.stale > _SWEEP_MIN:
            self._sweep()
        return due

    def _sweep(self) -> None:
        if self.stale * 2 <= len(self._heap):
            return
        self._heap = [item for item in self._heap if not item[2].done]
        heapq.heapify(self._heap)
        self.stale = 0

    def clear(self) -> None:
        """Forget every call (the lanes' memory too: new lanes are made as needed)."""
        for lane in self.lanes.values():
            for call in lane:
                call.lane = None
        self._heap = []
        self.lanes.clear()  # (the same dict: see lanes)
        self.stale = 0

    def __len__(self) -> int:
        return len(self._heap) + sum(len(lane) for lane in self.lanes.values())
