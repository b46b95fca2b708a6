"""The sans-I/O endpoint, driven event by event with a fake clock."""

from __future__ import annotations

import math
import sys
from typing import Any

import pytest

from aiodisp import AdapterError, DuplicateKeyError, MessageTooLarge, RetryPolicy
from aiodisp._core.budget import RetryAccount, RetryBudget
from aiodisp._core.delivery_log import DeliveryLog
from aiodisp._core.endpoint import Endpoint, Pending
from aiodisp._core.framing import FLAG_ACK, FLAG_ACK_REQUESTED, ack_for, pack_header
from aiodisp.retry import ADAPTIVE
from tests.helpers.adapters import FlagAdapter, KeyAdapter

A = ("10.0.0.1", 1000)
B = ("10.0.0.2", 2000)
EVIL = ("10.6.6.6", 666)


class Waiter:
    """Stands in for a future: the core only stores it."""


def endpoint(framing: str = "ack", adapter: Any = None, **kw: Any) -> Endpoint[Any]:
    return Endpoint(
        adapter or KeyAdapter(), framing=framing, seed=1, **kw  # type: ignore[arg-type]
    )


def deliver(
    src: Endpoint[Any], dst: Endpoint[Any], frame: bytes, src_addr: Any, now: float
) -> Pending | None:
    return dst.receive(frame, src_addr, now)


def test_request_is_completed_by_the_reply_with_its_key_from_its_peer() -> None:
    client, server = endpoint(), endpoint()
    p = client.start_request((7, b"q"), B, Waiter(), 0.0, 1.0, None)
    assert p.frame is not None
    assert server.receive(p.frame, A, 0.001) is None
    assert list(server.inbox) == [((7, b"q"), 9, A)]  # size: the adapter bytes
    reply = server.frame_oneway((7, b"r"), A)
    done = client.receive(reply, B, 0.002)
    assert done is p and p.done and p.result == (7, b"r")
    assert client.pending_count == 0
    assert client.counters.replies_matched == 1
    assert client.inbox == type(client.inbox)()


def test_reply_from_another_address_is_an_ordinary_message_without_is_reply() -> None:
    client, server = endpoint(), endpoint()
    p = client.start_request((7, b"q"), B, Waiter(), 0.0, 1.0, None)
    forged = server.frame_oneway((7, b"forged"), A)
    assert client.receive(forged, EVIL, 0.001) is None
    assert not p.done
    assert client.inbox[0].addr == EVIL


def test_reply_from_another_address_is_dropped_with_is_reply() -> None:
    client, server = endpoint(adapter=FlagAdapter()), endpoint(adapter=FlagAdapter())
    p = client.start_request((7, b"q", False), B, Waiter(), 0.0, 1.0, None)
    forged = server.frame_oneway((7, b"forged", True), A)
    assert client.receive(forged, EVIL, 0.001) is None
    assert client.counters.wrong_source == 1
    assert not client.inbox and not p.done
    genuine = server.frame_oneway((7, b"real", True), A)
    assert client.receive(genuine, B, 0.002) is p


def test_source_check_can_be_turned_off() -> None:
    client = endpoint(adapter=FlagAdapter(), check_source=False)
    server = endpoint(adapter=FlagAdapter())
    p = client.start_request((7, b"q", False), B, Waiter(), 0.0, 1.0, None)
    assert client.receive(server.frame_oneway((7, b"r", True), A), EVIL, 0.001) is p


def test_is_reply_keeps_a_peer_request_with_our_key_out_of_our_wait_table() -> None:
    client, server = endpoint(adapter=FlagAdapter()), endpoint(adapter=FlagAdapter())
    p = client.start_request((7, b"q", False), B, Waiter(), 0.0, 1.0, None)
    peer_request = server.frame_oneway((7, b"their own request", False), A)
    assert client.receive(peer_request, B, 0.001) is None
    assert not p.done
    assert client.inbox[0].msg == (7, b"their own request", False)


def test_unknown_reply_is_dropped_and_counted() -> None:
    client, server = endpoint(adapter=FlagAdapter()), endpoint(adapter=FlagAdapter())
    assert client.receive(server.frame_oneway((9, b"", True), A), B, 0.0) is None
    assert client.counters.unknown_replies == 1 and not client.inbox


def test_second_reply_completes_nothing() -> None:
    client, server = endpoint(adapter=FlagAdapter()), endpoint(adapter=FlagAdapter())
    client.start_request((7, b"q", False), B, Waiter(), 0.0, 1.0, None)
    first = server.frame_oneway((7, b"1", True), A)
    second = server.frame_oneway((7, b"2", True), A)
    assert client.receive(first, B, 0.001) is not None
    assert client.receive(second, B, 0.002) is None
    assert client.receive(first, B, 0.003) is None  # a network duplicate of the first
    assert client.counters.replies_matched == 1
    # with is_reply a late copy is simply an unknown reply (no log entry is spent on it)
    assert client.counters.unknown_replies == 2


def test_network_duplicate_of_a_reply_is_not_delivered_without_is_reply() -> None:
    client, server = endpoint(), endpoint()
    client.start_request((7, b"q"), B, Waiter(), 0.0, 1.0, None)
    reply = server.frame_oneway((7, b"r"), A)
    assert client.receive(reply, B, 0.001) is not None
    assert client.receive(reply, B, 0.002) is None
    assert not client.inbox and client.counters.duplicates == 1


def test_duplicate_key_is_refused_while_pending() -> None:
    client = endpoint()
    client.start_request((7, b"q"), B, Waiter(), 0.0, 1.0, None)
    with pytest.raises(DuplicateKeyError):
        client.start_request((7, b"q"), A, Waiter(), 0.0, 1.0, None)


def test_adapter_failure_on_send_is_an_adapter_error_with_the_cause() -> None:
    class Broken(KeyAdapter):
        def msg_to_raw(self, msg: Any) -> bytes:
            raise ValueError("cannot encode")

    client = endpoint(adapter=Broken())
    with pytest.raises(AdapterError) as info:
        client.start_request((1, b""), B, Waiter(), 0.0, 1.0, None)
    assert isinstance(info.value.__cause__, ValueError)
    assert client.pending_count == 0


def test_message_too_large_is_refused_before_registering() -> None:
    client = endpoint(max_datagram_size=100)
    with pytest.raises(MessageTooLarge) as info:
        client.start_request((1, b"x" * 100), B, Waiter(), 0.0, 1.0, None)
    assert info.value.size == 108 + 8 and info.value.limit == 100
    assert client.pending_count == 0


def test_request_without_policy_times_out_at_its_deadline_after_one_send() -> None:
    client = endpoint()
    p = client.start_request((1, b""), B, Waiter(), 0.0, 2.0, None)
    assert client.next_deadline() == 2.0
    assert client.handle_timer(1.999) == []
    assert client.handle_timer(2.0) == [p]
    assert p.attempts == 1 and client.pending_count == 0
    assert client.counters.timeouts == 1 and not client.outbox
    assert client.next_deadline() is None


def test_retry_policy_retransmits_the_same_frame_with_backoff() -> None:
    client = endpoint()
    policy = RetryPolicy(initial_timeout=0.1, backoff=2.0, max_attempts=4, jitter=0.0)
    p = client.start_request((1, b"x"), B, Waiter(), 0.0, 60.0, policy)
    frame = p.frame
    times = []
    now = 0.0
    while True:
        when = client.next_deadline()
        assert when is not None
        now = when
        expired = client.handle_timer(now)
        if expired:
            break
        times.append(round(now, 6))
        assert client.outbox == [(frame, B)]
        client.outbox.clear()
    assert times == [0.1, 0.3, 0.7]
    assert round(now, 6) == 1.5  # the last attempt's wait (0.8 s) is spent too
    assert p.attempts == 4 and client.counters.retransmissions == 3


def test_timeout_cuts_the_retry_policy_short() -> None:
    client = endpoint()
    policy = RetryPolicy(initial_timeout=0.1, backoff=2.0, max_attempts=10, jitter=0.0)
    p = client.start_request((1, b"x"), B, Waiter(), 0.0, 0.5, policy)
    expired: list[Pending] = []
    while not expired:
        when = client.next_deadline()
        assert when is not None and when <= 0.5
        expired = client.handle_timer(when)
    assert expired == [p] and p.attempts == 3


def test_max_interval_caps_the_backoff() -> None:
    client = endpoint()
    policy = RetryPolicy(initial_timeout=1.0, backoff=10.0, max_attempts=None, jitter=0.0,
                         max_interval=1.5)
    client.start_request((1, b"x"), B, Waiter(), 0.0, 100.0, policy)
    seen = []
    for _ in range(4):
        when = client.next_deadline()
        assert when is not None
        seen.append(when)
        client.handle_timer(when)
    assert seen == [1.0, 2.5, 4.0, 5.5]


def test_jitter_spreads_waits_within_its_fraction() -> None:
    """The first wait is spread once per lane of calls (the calls made with one policy
    share it: they are due in the order they were made); each endpoint, two clients
    say, draws its own. Later waits are spread call by call."""
    policy = RetryPolicy(initial_timeout=1.0, jitter=0.25, max_attempts=3)
    firsts = set()
    for seed in range(50):
        client = Endpoint(KeyAdapter(), seed=seed)
        calls = [client.start_request((i, b""), B, Waiter(), 0.0, 10.0, policy)
                 for i in range(5)]
        assert len({p.due for p in calls}) == 1 and calls[0].lane is not None
        first = calls[0].due
        firsts.add(first)
        client.handle_timer(first)
        seconds = {p.due - first for p in calls}  # backoff 2, each spread on its own
        assert len(seconds) == 5 and all(1.5 * first <= s <= 2.5 * first for s in seconds)
    assert len(firsts) > 40 and all(0.75 <= d <= 1.25 for d in firsts)


def test_cancel_removes_the_call_and_its_timer_work() -> None:
    client = endpoint()
    policy = RetryPolicy(initial_timeout=0.1, jitter=0.0)
    p = client.start_request((1, b""), B, Waiter(), 0.0, 1.0, policy)
    client.cancel(p)
    assert client.pending_count == 0 and client.counters.cancelled == 1
    assert client.handle_timer(10.0) == [] and not client.outbox
    assert client.next_deadline() is None and client.heap_size == 0
    # the key is free again
    client.start_request((1, b""), B, Waiter(), 0.0, 1.0, None)


def test_finished_calls_do_not_pile_up_in_the_timer_heap() -> None:
    client, server = endpoint(), endpoint()
    for i in range(5000):
        p = client.start_request((i, b""), B, Waiter(), i * 1e-3, 30.0, None)
        if i % 2:
            client.cancel(p)
        else:
            client.receive(server.frame_oneway((i, b""), A), B, i * 1e-3)
        client.handle_timer(i * 1e-3)
    assert client.pending_count == 0
    assert client.heap_size <= 2 * 1024 + 2


def test_notify_is_completed_by_the_ack_from_its_peer_only() -> None:
    client, server = endpoint(), endpoint()
    p = client.start_notify((3, b"n"), B, Waiter(), 0.0, 1.0, RetryPolicy(initial_timeout=0.1))
    assert p.frame is not None and p.frame[0] == FLAG_ACK_REQUESTED
    server.receive(p.frame, A, 0.01)
    assert server.outbox == [(ack_for(p.packet_id), A)]
    ack = server.outbox.pop()[0]
    assert client.receive(ack, EVIL, 0.02) is None and client.counters.unknown_acks == 1
    assert client.receive(ack, B, 0.02) is p and p.done
    assert client.receive(ack, B, 0.03) is None and client.counters.unknown_acks == 2


def test_full_queue_drops_the_newest_without_ack_or_memory_of_it() -> None:
    client, server = endpoint(), endpoint(max_queue=2)
    frames = [
        client.start_notify((i, b""), B, Waiter(), 0.0, 1.0, RetryPolicy(initial_timeout=0.1))
        for i in range(3)
    ]
    for p in frames:
        assert p.frame is not None
        server.receive(p.frame, A, 0.0)
    assert len(server.inbox) == 2 and server.counters.queue_drops == 1
    assert len(server.outbox) == 2  # two ACKs, none for the dropped one
    server.inbox.popleft()
    retransmitted = frames[2].frame
    assert retransmitted is not None
    server.receive(retransmitted, A, 0.2)  # now there is room: delivered and ACKed
    assert server.inbox[-1].msg == (2, b"") and len(server.outbox) == 3


def test_retransmitted_copy_is_acked_again_but_delivered_once() -> None:
    client, server = endpoint(), endpoint()
    p = client.start_notify((3, b"n"), B, Waiter(), 0.0, 1.0, RetryPolicy(initial_timeout=0.1))
    assert p.frame is not None
    frame = p.frame
    server.receive(frame, A, 0.0)
    server.receive(frame, A, 0.1)
    assert len(server.inbox) == 1 and server.counters.duplicates == 1
    assert [d for d, _ in server.outbox] == [ack_for(p.packet_id)] * 2


def test_retransmitted_request_gets_the_cached_reply_and_is_not_redelivered() -> None:
    client, server = endpoint(), endpoint()
    p = client.start_request((5, b"q"), B, Waiter(), 0.0, 5.0, RetryPolicy(initial_timeout=0.1))
    request_frame = p.frame
    assert request_frame is not None
    server.receive(request_frame, A, 0.01)
    server.inbox.popleft()
    reply = server.frame_oneway((5, b"answer"), A)  # the reply is lost on the way
    server.receive(request_frame, A, 0.1)  # the client's retransmission
    assert not server.inbox and server.counters.replies_resent == 1
    assert server.outbox == [(reply, A)]
    assert client.receive(server.outbox[0][0], B, 0.11) is p and p.result == (5, b"answer")


def test_retransmitted_request_before_the_reply_is_dropped() -> None:
    client, server = endpoint(), endpoint()
    p = client.start_request((5, b"q"), B, Waiter(), 0.0, 5.0, RetryPolicy(initial_timeout=0.1))
    assert p.frame is not None
    server.receive(p.frame, A, 0.01)
    server.receive(p.frame, A, 0.1)
    assert len(server.inbox) == 1 and not server.outbox


def test_reply_cache_only_holds_replies_to_delivered_requests() -> None:
    server = endpoint()
    server.frame_oneway((5, b"unsolicited"), A)
    assert server.log.replies_indexed == 0


def test_delivery_log_is_bounded_and_expires() -> None:
    log = DeliveryLog(ttl=1.0, capacity=3)
    for i in range(10):
        log.record(A, i, i, 0.0)
    assert len(log) == 3 and log.replies_indexed == 3
    assert log.seen(A, 9, 0.5) is not None and log.seen(A, 0, 0.5) is None
    assert log.seen(A, 9, 1.0) is None  # expired
    log.record(A, 100, None, 2.0)
    assert len(log) == 1 and log.replies_indexed == 0


def test_bad_datagrams_are_counted_never_raised() -> None:
    class Picky(KeyAdapter):
        def raw_to_msg(self, raw: bytes) -> Any:
            if raw.startswith(b"!"):
                raise ValueError("bad")
            return super().raw_to_msg(raw)

    server = endpoint(adapter=Picky(), max_datagram_size=64)
    server.receive(b"", A, 0)
    server.receive(b"\x01\x02", A, 0)
    server.receive(pack_header(0x80, 1) + b"x" * 8, A, 0)
    server.receive(pack_header(FLAG_ACK, 1) + b"payload", A, 0)
    server.receive(pack_header(0, 2) + b"!garbage", A, 0)
    server.receive(pack_header(0, 3) + b"x" * 100, A, 0)
    server.receive(pack_header(FLAG_ACK, 4), A, 0)
    c = server.counters
    assert (c.empty, c.header_errors, c.decode_errors, c.oversize, c.unknown_acks) == (
        1, 3, 1, 1, 1)
    assert c.received == 7 and not server.inbox and not server.outbox


def test_raw_framing_sends_the_adapter_bytes_alone() -> None:
    client, server = endpoint("raw"), endpoint("raw")
    p = client.start_request((7, b"q"), B, Waiter(), 0.0, 1.0, None)
    assert p.frame == KeyAdapter().msg_to_raw((7, b"q"))
    server.receive(p.frame, A, 0.0)
    server.receive(p.frame, A, 0.0)  # no de-duplication is promised over raw framing
    assert len(server.inbox) == 2
    with pytest.raises(RuntimeError):
        client.start_notify((1, b""), B, Waiter(), 0.0, 1.0, RetryPolicy())


def test_packet_ids_stay_within_56_bits() -> None:
    """(Ids are random now, not a counter that wraps: see tests/core/test_packet_ids.py.)"""
    client = endpoint()
    ids = [client.start_request((i, b""), B, Waiter(), 0.0, 1.0, None).packet_id
           for i in range(3000)]
    assert all(0 <= i < 1 << 56 for i in ids) and max(ids) >= 1 << 55


def test_adaptive_timeout_follows_measured_round_trips() -> None:
    client, server = endpoint(), endpoint()
    assert client.rtt.rto(B) == 0.25
    for i in range(50):
        p = client.start_request((i, b""), B, Waiter(), float(i), 5.0, RetryPolicy())
        assert p.frame is not None
        server.receive(p.frame, A, i + 0.1)
        client.receive(server.frame_oneway((i, b""), A), B, i + 0.2)
    assert 0.19 < client.rtt.rto(B) < 0.3  # srtt 0.2, variance shrinking
    assert client.rtt.rto(A) == 0.25


def test_karns_rule_ignores_retransmitted_exchanges() -> None:
    client, server = endpoint(), endpoint()
    p = client.start_request((1, b""), B, Waiter(), 0.0, 60.0, RetryPolicy(initial_timeout=0.1))
    client.handle_timer(0.2)  # retransmitted
    client.receive(server.frame_oneway((1, b""), A), B, 5.0)
    est = client.rtt.estimator(B)
    # no strong sample; a weak one (CoCoA, from the first send: tests/core/test_congestion_rtt.py)
    assert p.done and est is not None and est.srtt is None and est.weak_srtt == 5.0


def test_close_returns_every_pending_call_and_discards_the_queue() -> None:
    client, server = endpoint(), endpoint()
    r = client.start_request((1, b""), B, Waiter(), 0.0, 1.0, None)
    n = client.start_notify((2, b""), B, Waiter(), 0.0, 1.0, RetryPolicy())
    client.receive(server.frame_oneway((3, b""), A), B, 0.0)
    assert set(client.close()) == {r, n}
    assert client.pending_count == 0 and client.counters.discarded_on_close == 1
    assert client.next_deadline() is None


def test_reply_cache_is_bounded_in_bytes_oldest_replies_go_first() -> None:
    log = DeliveryLog(ttl=10.0, capacity=100, reply_bytes=250)
    for i in range(5):
        log.record(A, i, i, 0.0)
        assert log.attach_reply(A, i, bytes(100))
        assert log.reply_bytes_used <= 250
    entries = [log.seen(A, i, 1.0) for i in range(5)]
    assert [e is not None and log.cached_reply(e) is not None for e in entries] == [
        False, False, False, True, True]
    assert not log.attach_reply(A, 99, bytes(10))  # no delivered request with that key
    log.record(B, 0, 0, 0.0)
    assert not log.attach_reply(B, 0, bytes(300))  # larger than the whole budget
    log.record(A, 100, None, 20.0)  # everything older expires, and its bytes are freed
    assert log.reply_bytes_used == 0 and len(log._replies) == 0


def test_a_replayed_request_gets_its_cached_reply_a_bounded_number_of_times() -> None:
    from aiodisp._core.delivery_log import MAX_REPLY_RESENDS

    client, server = endpoint(), endpoint()
    p = client.start_request((5, b"q"), B, Waiter(), 0.0, 5.0, RetryPolicy(initial_timeout=0.1))
    assert p.frame is not None
    server.receive(p.frame, A, 0.0)
    server.inbox.popleft()
    server.frame_oneway((5, b"answer"), A)
    for _ in range(MAX_REPLY_RESENDS + 20):
        server.receive(p.frame, A, 0.1)
    assert server.counters.replies_resent == MAX_REPLY_RESENDS
    assert len(server.outbox) == MAX_REPLY_RESENDS
    assert server.counters.duplicates == MAX_REPLY_RESENDS + 20


def test_a_copy_arriving_after_its_entry_expired_is_delivered_and_answered_afresh() -> None:
    client = endpoint()
    server = endpoint(dedup_ttl=1.0)
    p = client.start_request((5, b"q"), B, Waiter(), 0.0, 5.0, RetryPolicy(initial_timeout=0.1))
    assert p.frame is not None
    server.receive(p.frame, A, 0.0)
    server.inbox.popleft()
    server.frame_oneway((5, b"first answer"), A)
    log = server.log
    used = log.reply_bytes_used
    assert used > 0 and log.replies_cached == 1
    server.receive(p.frame, A, 0.5)  # within the ttl: a duplicate, answered from the cache
    assert server.counters.duplicates == 1 and not server.inbox
    # past the ttl the entry (and its cached reply) is forgotten before the copy is
    # delivered again: the application answers again, and the byte count stays exact
    server.receive(p.frame, A, 2.0)
    assert server.counters.delivered == 2 and len(server.inbox) == 1
    server.inbox.popleft()
    server.frame_oneway((5, b"second answer"), A)
    assert log.replies_cached == 1 and len(log) == 1
    assert log.reply_bytes_used == len(pack_header(0, 0)) + 8 + len(b"second answer")
    server.receive(pack_header(0, 99) + b"\x00" * 8, B, 10.0)  # everything older expires
    assert log.reply_bytes_used == 0 and log.replies_cached == 0


def test_tables_give_their_memory_back_after_a_peak() -> None:
    import sys

    client = endpoint()
    for i in range(20_000):
        client.start_request((i, b""), B, Waiter(), 0.0, 1.0, None)
    peak = sys.getsizeof(client.waiting)
    assert len(client.handle_timer(1.0)) == 20_000
    assert client.next_deadline() is None
    assert sys.getsizeof(client.waiting) < peak // 10


def test_every_call_ends_at_its_deadline_however_many_waits_share_the_lanes() -> None:
    """More first waits and timeouts than the schedule has lanes, calls sent once and
    calls with a policy mixed: lanes are let go and made again, and still every call
    retransmits and times out exactly when it should (none is left in a lane that
    the schedule forgot)."""
    client = endpoint()
    ended: dict[Any, float] = {}
    made = []
    for i in range(60):
        policy = (RetryPolicy(initial_timeout=0.01 * (1 + i % 11), jitter=0.0,
                              max_attempts=None, max_interval=0.1) if i % 3 else None)
        made.append(client.start_request((i, b""), B, Waiter(), i * 0.001,
                                         0.5 + (i % 13) * 0.1, policy))
    while (when := client.next_deadline()) is not None:
        for p in client.handle_timer(when):
            ended[p.key] = when
        assert when < 5.0
    assert sorted(ended) == list(range(60))
    for p in made:
        assert ended[p.key] == pytest.approx(p.deadline)
        assert (p.attempts == 1) == (p.policy is None)  # (the others retransmitted)


def test_the_first_wait_comes_from_the_rtt_tables_estimate() -> None:
    """_schedule_first reads the estimate the RTT table gives (RttTable.rto, inlined)."""
    e = endpoint()
    for rtt in (0.2, 0.3, 0.25):
        e.rtt.sample(B, rtt)
    policy = ADAPTIVE
    for key, addr in ((1, B), (2, "a peer never sampled")):
        p = e.start_request((key, b""), addr, Waiter(), 0.0, 30.0, policy)
        estimate = min(e.rtt.rto(addr), policy.max_interval)
        assert (estimate, policy.jitter) in e._first_waits
        step = 2.0 ** (math.ceil(math.log2(estimate) * 16.0) / 16.0)
        assert step * (1 - policy.jitter) <= p.interval <= step * (1 + policy.jitter)
    assert e.rtt.rto(B) != e.rtt.rto("a peer never sampled")


def test_a_timer_pass_asks_a_refused_peers_budget_once() -> None:
    """A stalled peer with many calls due at once: the budget lets the floor through,
    refuses the rest, and is asked no more in that pass once it has refused (its
    account moves only with the clock and first sends)."""
    e = endpoint(retry_budget=RetryBudget(ratio=0.0, min_per_second=0.5))  # floor: 5
    policy = RetryPolicy(initial_timeout=0.1, backoff=2.0, max_attempts=None, jitter=0.0)
    for i in range(50):
        e.start_request((i, b"q"), B, Waiter(), 0.0, 60.0, policy)

    def asked_in(now: float) -> int:
        """The calls to the budget's account during one timer pass at ``now``."""
        asked = 0

        def count(frame: Any, event: str, arg: Any) -> None:
            nonlocal asked
            if event == "call" and frame.f_code is RetryAccount.withdraw.__code__:
                asked += 1

        sys.setprofile(count)
        try:
            assert e.handle_timer(now) == []
        finally:
            sys.setprofile(None)
        return asked

    assert asked_in(0.2) == 6  # five granted, one refusal
    assert e.counters.retransmissions == 5 and e.counters.budget_denied == 45
    assert len(e.outbox) == 5
    # the refusal holds for the pass only: later, the same budget is asked again
    assert asked_in(0.4) == 1
    assert e.counters.budget_denied == 45 + 50
    assert e.counters.retransmissions == 5
