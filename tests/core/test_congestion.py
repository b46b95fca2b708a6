"""The per-peer window on a fake clock: slow start, additive increase, one cut per
round trip, probes, persistent congestion, and the application-limited rule."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from aiodisp._core.congestion import INITIAL_WINDOW, PERSISTENT_PROBES, Peer, Windows

A = ("192.0.2.1", 7)
B = ("192.0.2.2", 7)
RTO = 0.1


def fill(w: Windows, peer: Peer, n: int) -> None:
    for _ in range(n):
        w.started(peer)


def test_a_new_peer_may_have_the_initial_window_in_flight_then_calls_wait() -> None:
    w = Windows()
    peer = w.peer(A, 0.0)
    assert w.window(A) == INITIAL_WINDOW == 10
    fill(w, peer, INITIAL_WINDOW - 1)
    assert A not in w.throttled and w.room(A) == 1
    w.started(peer)
    assert A in w.throttled and w.room(A) == 0
    assert w.window(B) == INITIAL_WINDOW and B not in w.throttled


def test_slow_start_doubles_the_window_each_round_trip_while_it_is_full() -> None:
    w = Windows()
    peer = w.peer(A, 0.0)
    now = 0.0
    for expected in (10, 20, 40, 80):
        assert peer.limit == expected
        fill(w, peer, peer.limit - peer.in_flight)
        sent_at = now
        now += 0.01
        for _ in range(expected):  # the round's calls come back; each frees room for two
            w.answered_call(peer, sent_at, sent_at + 0.01)
            fill(w, peer, peer.limit - peer.in_flight)
    assert peer.limit == 160


def test_above_the_threshold_the_window_grows_by_one_call_a_round_trip() -> None:
    w = Windows()
    peer = w.peer(A, 0.0)
    peer.cwnd, peer.limit, peer.ssthresh = 20.0, 20, 20.0
    fill(w, peer, 20)
    for _ in range(20):
        w.answered_call(peer, 0.0, 0.01)
        fill(w, peer, peer.limit - peer.in_flight)
    assert peer.limit == 20 and 20.9 < peer.cwnd < 21.1  # about one call per round trip


def test_a_window_the_application_does_not_fill_does_not_grow() -> None:
    w = Windows()
    peer = w.peer(A, 0.0)
    for i in range(1000):  # three calls at a time, for a long while
        fill(w, peer, 3)
        for _ in range(3):
            w.answered_call(peer, float(i), float(i) + 0.01)
    assert peer.limit == INITIAL_WINDOW and peer.cwnd == INITIAL_WINDOW


def test_calls_waiting_for_the_window_count_as_using_it() -> None:
    """Replies arriving together, each waking a waiter that has not started yet,
    still grow the window: the woken callers are counted as waiting until they start."""
    w = Windows()
    peer = w.peer(A, 0.0)
    fill(w, peer, 10)
    for _ in range(30):
        w.wait_begins(A, 0.0)
    for _ in range(10):  # ten replies in one batch: no waiter has started meanwhile
        w.answered_call(peer, 0.0, 0.01)
    assert peer.limit == 20
    assert A in w.throttled  # callers still wait: new calls queue behind them
    for _ in range(30):
        w.wait_ends(A)
    assert A not in w.throttled


def test_a_timer_after_a_later_call_was_answered_is_a_loss_that_halves_the_window() -> None:
    w = Windows()
    peer = w.peer(A, 0.0)
    peer.cwnd, peer.limit = 40.0, 40
    fill(w, peer, 30)
    w.answered_call(peer, 0.2, 0.21)  # a call sent at 0.2 came back
    assert w.on_timer(peer, 0.1, 0.5, RTO) is None  # the one sent at 0.1 was lost
    assert peer.limit == 20 and peer.ssthresh == 20.0 and peer.recovery_start == 0.5


def test_the_window_is_cut_at_most_once_per_round_trip() -> None:
    w = Windows()
    peer = w.peer(A, 0.0)
    peer.cwnd, peer.limit = 40.0, 40
    fill(w, peer, 30)
    w.answered_call(peer, 0.3, 0.31)
    for sent in (0.1, 0.11, 0.12, 0.2):  # all sent before the cut at 0.5
        assert w.on_timer(peer, sent, 0.5 + sent, RTO) is None
    assert peer.limit == 20
    w.answered_call(peer, 0.9, 0.91)
    assert w.on_timer(peer, 0.8, 1.2, RTO) is None  # sent after the cut: a new loss
    assert peer.limit == 10


def test_calls_sent_before_the_cut_grow_nothing() -> None:
    w = Windows()
    peer = w.peer(A, 0.0)
    fill(w, peer, 10)
    w.answered_call(peer, 0.2, 0.21)  # (the window was full: it grows to 11 first)
    w.on_timer(peer, 0.1, 0.5, RTO)
    assert peer.limit == 5
    for _ in range(4):
        w.answered_call(peer, 0.3, 0.31)  # sent before the cut at 0.5, answered after it
    assert peer.limit == 5


def test_a_timer_with_nothing_later_answered_probes_one_call_and_defers_the_rest() -> None:
    """A busy peer answers late: the first due call is its probe, the others wait
    for the next probe time, and the window is not cut."""
    w = Windows()
    peer = w.peer(A, 0.0)
    fill(w, peer, 10)
    assert w.on_timer(peer, 0.0, 0.25, RTO) is None  # the probe
    for _ in range(9):
        assert w.on_timer(peer, 0.0, 0.25, RTO) == 0.25 + RTO
    assert peer.limit == 10
    w.answered_call(peer, 0.0, 0.3)  # the peer answers (an old call): progress, growth
    assert w.on_timer(peer, 0.0, 0.36, RTO) is None  # a new probe, no cut
    assert peer.limit == 11


def test_a_peer_that_answers_no_probe_is_probed_one_call_at_a_time() -> None:
    w = Windows()
    peer = w.peer(A, 0.0)
    fill(w, peer, 10)
    assert w.on_timer(peer, 0.0, 0.25, RTO) is None
    # the next probe waits twice as long once the first went unanswered
    assert w.on_timer(peer, 0.0, 0.3, RTO) == 0.35
    assert w.on_timer(peer, 0.0, 0.35, RTO) is None
    assert PERSISTENT_PROBES == 2 and peer.limit == 1 and peer.ssthresh == 5.0
    assert peer.next_probe == 0.35 + 2 * RTO
    # the peer wakes up: slow start from one call back to half the old window
    for _ in range(10):
        w.ended(peer)
    now = 1.0
    while peer.limit < 5:
        fill(w, peer, peer.limit - peer.in_flight)
        for _ in range(peer.in_flight):
            w.answered_call(peer, now, now + 0.01)
        now += 0.01
    assert peer.cwnd == 5.0 and peer.cwnd >= peer.ssthresh  # now additive increase


def test_a_probe_that_wakes_a_silent_peer_shows_the_calls_sent_before_it_as_lost() -> None:
    w = Windows()
    peer = w.peer(A, 0.0)
    fill(w, peer, 10)
    assert w.on_timer(peer, 0.0, 0.25, RTO) is None  # call 1 is the probe at 0.25
    assert w.on_timer(peer, 0.0, 0.25, RTO) == 0.35  # call 2 waits
    assert w.on_timer(peer, 0.0, 0.35, RTO) is None  # no answer: call 2 probes, window 1
    assert peer.limit == 1
    # call 2's answer, with nothing else heard since its copy at 0.35: a probe woke the peer
    w.retransmission_answered(peer, 0.0, 0.35, 0.4)
    assert peer.answered == 0.35
    assert w.on_timer(peer, 0.0, 0.45, RTO) is None  # call 3, sent before it: lost, sent again


def test_an_answer_read_late_by_a_busy_caller_shows_no_loss() -> None:
    """One probe, then the caller reads nothing for a while (its loop was busy), then
    the probe call's answer: no other call is taken as lost."""
    w = Windows()
    peer = w.peer(A, 0.0)
    fill(w, peer, 10)
    assert w.on_timer(peer, 0.0, 0.25, RTO) is None
    w.retransmission_answered(peer, 0.0, 0.25, 0.5)  # first thing read since 0.25
    assert peer.answered == 0.0
    assert w.on_timer(peer, 0.01, 0.5, RTO) is None  # a new probe, not a loss
    assert peer.recovery_start == float("-inf") and peer.limit == 10


def test_timeouts_of_calls_sent_once_are_loss_signals_too() -> None:
    w = Windows()
    peer = w.peer(A, 0.0)
    fill(w, peer, 10)
    w.answered_call(peer, 0.5, 0.51)
    w.expired(peer, 0.1, 5.1)  # a later call came back: a loss
    assert peer.limit == 5
    for _ in range(8):  # the peer died: every other call times out unanswered
        w.expired(peer, 0.6, 5.6)
    assert peer.limit == 1 and peer.in_flight == 0 and A not in w.throttled


def test_a_cancelled_call_frees_its_place_and_is_no_loss() -> None:
    w = Windows()
    peer = w.peer(A, 0.0)
    fill(w, peer, 10)
    assert A in w.throttled
    w.ended(peer)
    assert peer.limit == 10 and A not in w.throttled


def test_congestion_control_off_never_throttles_and_always_retransmits() -> None:
    w = Windows(enabled=False)
    peer = w.peer(A, 0.0)
    fill(w, peer, 100_000)
    assert w.window(A) is None and not w.throttled
    assert w.on_timer(peer, 0.0, 1.0, RTO) is None
    w.expired(peer, 0.0, 5.0)
    assert not w.throttled and peer.sends == 100_000


def test_idle_peers_are_forgotten_when_the_table_is_full_busy_ones_are_kept() -> None:
    w = Windows(capacity=16)
    busy = w.peer(A, 0.0)
    w.started(busy)
    for port in range(100):
        w.peer(("198.51.100.1", port), 0.0)
        assert len(w.peers) <= 16
    assert w.peers[A] is busy


EVENTS = st.lists(
    st.tuples(
        st.sampled_from(["start", "answer", "resent_answer", "timer", "expire", "cancel",
                         "wait", "unwait"]),
        st.floats(0.0, 0.2),
    ),
    max_size=300,
)


@settings(max_examples=300, deadline=None)
@given(events=EVENTS, enabled=st.booleans())
def test_the_window_never_falls_below_one_and_throttled_says_who_must_wait(
    events: list[tuple[str, float]], enabled: bool
) -> None:
    w = Windows(enabled=enabled)
    peer = w.peer(A, 0.0)
    now = 0.0
    sent: list[float] = []  # first-send times of the calls in flight
    for event, gap in events:
        now += gap
        if event == "start" and (peer.in_flight < peer.limit or not enabled):
            w.started(peer)
            sent.append(now)
        elif event in ("answer", "resent_answer", "expire", "cancel", "timer") and sent:
            when = sent[0]
            if event == "timer":
                w.on_timer(peer, when, now, RTO)
                continue
            sent.pop(0)
            if event == "answer":
                w.answered_call(peer, when, now)
            elif event == "resent_answer":
                w.retransmission_answered(peer, when, now - gap / 2, now)
            elif event == "expire":
                w.expired(peer, when, now)
            else:
                w.ended(peer)
        elif event == "wait":
            w.wait_begins(A, now)
        elif event == "unwait" and peer.waiting:
            w.wait_ends(A)
        assert peer.in_flight == len(sent) >= 0
        assert peer.limit >= 1 and peer.cwnd >= 1.0
        if enabled:
            assert peer.limit == int(peer.cwnd)
        assert (A in w.throttled) == (peer.in_flight >= peer.limit or peer.waiting > 0)


def _state(peer: Peer) -> dict[str, Any]:
    return {name: getattr(peer, name) for name in Peer.__slots__}


def test_an_answer_to_a_retransmitted_call_of_a_busy_peer_shows_no_loss() -> None:
    """A busy peer answers its queue in order: the answer to a call sent again is
    the first copy's, so the calls queued after that first copy are not lost."""
    w = Windows()
    peer = w.peer(A, 0.0)
    fill(w, peer, 10)  # sent at 0.0 .. 0.09
    assert w.on_timer(peer, 0.0, 0.25, RTO) is None  # call 1 probes at 0.25
    w.answered_call(peer, 0.0, 0.26)  # another old call is answered meanwhile
    w.retransmission_answered(peer, 0.0, 0.25, 0.27)  # then call 1 (its first copy's)
    assert peer.answered == 0.0
    assert w.on_timer(peer, 0.05, 0.36, RTO) is None  # a new probe, not a loss
    assert peer.limit == 11 and peer.recovery_start == float("-inf")
