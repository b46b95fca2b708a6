"""The core's timer queue: heap for retrying calls, FIFO lanes per timeout for the rest."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from aiodisp._core.pending import Pending, new_pending
from aiodisp._core.schedule import MAX_LANES, Schedule, Scheduled


@dataclass(eq=False)
class Call:
    due: float
    deadline: float
    done: bool = False
    lane: Any = None


def finish(s: Schedule, call: Call) -> None:
    """What the owner does when a call ends early."""
    call.done = True
    s.finished(call)


def final(s: Schedule, now: float, timeout: float) -> Call:
    call = Call(now + timeout, now + timeout)
    s.add_final(call, timeout)
    return call


def test_calls_come_due_in_deadline_order_across_heap_and_lanes() -> None:
    s = Schedule()
    a = final(s, 0.0, 5.0)
    b = final(s, 1.0, 1.0)
    c = Call(due=0.5, deadline=10.0)
    s.add(c)
    assert s.next_due() == 0.5
    assert s.pop_due(0.5) == [c]
    assert s.next_due() == 2.0
    assert s.pop_due(4.9) == [b]
    assert s.pop_due(5.0) == [a]
    assert s.next_due() is None and len(s) == 0


def test_finished_calls_leave_their_lane_at_once_and_are_swept_from_the_heap() -> None:
    s = Schedule()
    calls = [final(s, i * 1e-3, 60.0) for i in range(5000)]
    for call in calls:
        finish(s, call)
        finish(s, final(s, 10.0, 60.0))
        retrying = Call(due=1.0, deadline=60.0)
        s.add(retrying)
        finish(s, retrying)
    assert sum(len(lane) for lane in s.lanes.values()) == 0
    assert len(s) <= 2 * 1024 + 2
    assert s.next_due() is None and s.stale == 0 and len(s) == 0


def test_more_timeouts_than_lanes_fall_back_to_the_heap() -> None:
    s = Schedule()
    calls = [final(s, 0.0, 1.0 + i) for i in range(MAX_LANES + 5)]
    assert len(s._heap) == 5
    assert sorted(s.pop_due(100.0), key=lambda c: c.deadline) == calls
    assert len(s.lanes) == MAX_LANES


def test_a_lane_no_call_is_in_gives_its_place_to_a_new_timeout() -> None:
    """A burst of odd timeouts (say, budgets left after a slow start) must not send every
    later call to the heap: once their lanes are empty, the common timeout gets one."""
    s = Schedule()
    odd = [final(s, 0.0, 1.0 + i / 100) for i in range(MAX_LANES)]
    assert len(s._heap) == 0 and len(s.lanes) == MAX_LANES
    early = final(s, 0.0, 30.0)  # no place yet: the heap
    assert len(s._heap) == 1
    for call in odd[:-1]:
        finish(s, call)
    late = final(s, 1.0, 30.0)  # the emptied lanes are let go: 30.0 gets a lane
    assert late.lane is not None and len(s.lanes) == 2
    assert s.pop_due(100.0) == [early, odd[-1], late]


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 10), st.sampled_from([0.5, 1.0, 2.0, 3.0]),
                          st.booleans(), st.booleans()), max_size=60))
def test_every_pending_call_comes_due_once_never_early(
    spec: list[tuple[float, float, bool, bool]],
) -> None:
    s = Schedule()
    calls = []
    for start, timeout, retrying, ends_early in sorted(spec):
        if retrying:
            call = Call(start + timeout / 2, start + timeout)
            s.add(call)
        else:
            call = final(s, start, timeout)
        calls.append((call, ends_early))
    for call, finished in calls:
        if finished:
            finish(s, call)
    seen: list[Scheduled] = []
    now = 0.0
    while (when := s.next_due()) is not None:
        assert when >= now
        now = when
        for due in s.pop_due(now):
            assert due.due <= now and not due.done
            seen.append(due)
    assert sorted(map(id, seen)) == sorted(id(c) for c, finished in calls if not finished)


@given(st.lists(st.tuples(st.sampled_from([1.0, 2.0]), st.one_of(st.just(-1), st.integers(0, 5))),
                max_size=40))
def test_calls_due_at_once_come_out_whatever_their_tie(spec: list[tuple[float, int]]) -> None:
    """Heap entries tie on ``due`` (a burst rescheduled by one timer tick): the owner's
    numbers (packet ids) or the schedule's own order them, and an owner number two
    calls share (a stale entry's) falls back to the calls' own order: no TypeError."""
    s = Schedule()
    calls: list[Pending] = []
    for due, tie in spec:
        p = new_pending(0, len(calls), "peer", b"", tie, None, 0.0, due)
        s.add(p, tie)
        calls.append(p)
    out = s.pop_due(1.0) + s.pop_due(2.0)
    assert [p.due for p in out] == sorted(p.due for p in calls)
    assert sorted(map(id, out)) == sorted(map(id, calls))


def test_an_owner_tie_costs_no_int_per_entry() -> None:
    s = Schedule()
    p = new_pending(0, 1, "peer", b"", 123456789, None, 0.0, 1.0)
    s.add(p, p.packet_id)
    assert s._heap[0][1] is p.packet_id
    q = new_pending(0, 2, "peer", b"", -1, None, 0.0, 1.0)
    s.add(q, q.packet_id)  # none of its own: the schedule numbers it, apart from owners'
    assert [entry[1] < 0 for entry in sorted(s._heap)] == [True, False]


def test_a_lane_a_burst_has_left_lets_go_of_its_room() -> None:
    s = Schedule()
    small = sys.getsizeof(s.lane(1.0))
    burst = [final(s, 0.0, 1.0) for _ in range(10_000)]
    assert sys.getsizeof(s.lanes[1.0]) > 100 * small
    assert s.pop_due(1.0) == burst
    assert sys.getsizeof(s.lanes[1.0]) == small
    later = final(s, 2.0, 1.0)  # the lane goes on taking calls
    assert s.next_due() == 3.0 and s.pop_due(3.0) == [later]


def test_a_lane_a_burst_has_mostly_left_is_made_compact_and_keeps_its_calls() -> None:
    s = Schedule()
    burst = [final(s, float(i), 1.0) for i in range(10_000)]  # due at 1, 2, ... 10,000
    big = sys.getsizeof(s.lanes[1.0])
    assert s.pop_due(9_990.0) == burst[:9_990]  # a tail of 10 stays
    lane = s.lanes[1.0]
    assert sys.getsizeof(lane) < big / 100 and list(lane) == burst[9_990:]
    assert all(call.lane is lane for call in burst[9_990:])
    finish(s, burst[-1])  # finished() finds each call in its (new) lane
    assert s.pop_due(10_000.0) == burst[9_990:-1] and len(s) == 0

