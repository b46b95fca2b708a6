"""The message layer (classify, transaction_key, ack_for) in the sans-I/O core, event by
event with a fake clock, over raw framing."""

from __future__ import annotations

from typing import Any

import pytest

from aiodisp import (
    AdapterError,
    DuplicateKeyError,
    Kind,
    PeerRejected,
    ReliabilityUnavailable,
    RetryPolicy,
)
from aiodisp._core.delivery_log import MAX_REPLY_RESENDS
from aiodisp._core.endpoint import Endpoint
from aiodisp._core.message_layer import MessageLayer
from tests.helpers.adapters import FlagAdapter, KeyAdapter
from tests.helpers.two_layer import TwoLayerAdapter

A = ("10.0.0.1", 1000)
B = ("10.0.0.2", 2000)
EVIL = ("10.6.6.6", 666)
RETRY = RetryPolicy(initial_timeout=0.1, backoff=2.0, max_attempts=5, jitter=0.0)
ADAPTER = TwoLayerAdapter()


class Waiter:
    """Stands in for a future: the core only stores it."""


def endpoint(adapter: Any = None, **kw: Any) -> Endpoint[Any]:
    return Endpoint(adapter or TwoLayerAdapter(), framing="raw", seed=1, **kw)


def wire(*msg: Any) -> bytes:
    return ADAPTER.msg_to_raw(msg)


def sent(e: Endpoint[Any]) -> list[tuple[Any, Any]]:
    """The outbox, decoded, and emptied (as the driver does)."""
    out = [(ADAPTER.raw_to_msg(data), addr) for data, addr in e.outbox]
    e.outbox.clear()
    return out


def layer(e: Endpoint[Any]) -> MessageLayer:
    assert e.layer is not None
    return e.layer


# ---------------------------------------------------------------------- which path


def test_an_adapter_without_the_methods_keeps_the_plain_paths() -> None:
    for adapter in (KeyAdapter(), FlagAdapter()):
        e = Endpoint(adapter, framing="raw")
        assert e.layer is None
        assert e.receive.__func__ is Endpoint.receive  # type: ignore[attr-defined]
        assert e.start_request.__func__ is Endpoint.start_request  # type: ignore[attr-defined]


def test_any_of_the_methods_gives_raw_framing_the_message_layer() -> None:
    class OnlyAckFor(KeyAdapter):
        def ack_for(self, msg: Any) -> None:
            return None

    for adapter in (TwoLayerAdapter(), OnlyAckFor()):
        e = Endpoint(adapter, framing="raw")
        assert e.layer is not None and e.receive == e.layer.receive


def test_ack_framing_uses_classify_as_is_reply_and_no_message_layer() -> None:
    e = Endpoint(TwoLayerAdapter(), framing="ack")
    assert e.layer is None
    assert e._is_reply is not None
    assert e._is_reply(("R", 1, 2, b"")) and not e._is_reply(("M", 1, 2, b""))


# ---------------------------------------------------------------------- exactly once


def test_a_message_is_delivered_once_per_sender_and_transaction_key() -> None:
    e = endpoint()
    e.receive(wire("M", 7, 1, b"q"), A, 0.0)
    e.receive(wire("M", 7, 1, b"q"), A, 0.1)  # a retransmitted copy
    e.receive(wire("M", 7, 1, b"q"), B, 0.2)  # the same id from another peer: new
    assert [r.addr for r in e.inbox] == [A, B]
    assert e.counters.delivered == 2 and e.counters.duplicates == 1
    # each copy was taken, so each got its ack_for
    assert sent(e) == [(("A", 7, 0, b""), A)] * 2 + [(("A", 7, 0, b""), B)]
    assert e.counters.acks_sent == 3


def test_a_message_without_a_transaction_key_is_not_deduplicated() -> None:
    e = endpoint()
    e.receive(wire("M", None, 1, b"q"), A, 0.0)
    e.receive(wire("M", None, 1, b"q"), A, 0.1)
    assert len(e.inbox) == 2 and e.counters.duplicates == 0 and not e.outbox


def test_the_reply_to_a_delivered_message_answers_its_copies() -> None:
    e = endpoint(TwoLayerAdapter(piggyback=True))
    e.receive(wire("M", 7, 1, b"q"), A, 0.0)
    assert not e.outbox  # piggybacked: the application's reply is the ACK
    reply = e.frame_oneway(("R", 7, 1, b"r"), A)
    for n in range(MAX_REPLY_RESENDS + 3):
        e.receive(wire("M", 7, 1, b"q"), A, 0.1 + n * 0.01)
    assert [data for data, _ in e.outbox] == [reply] * MAX_REPLY_RESENDS  # bounded
    assert e.counters.replies_resent == MAX_REPLY_RESENDS
    assert len(e.inbox) == 1


def test_a_reply_to_another_peer_or_key_is_not_cached() -> None:
    e = endpoint(TwoLayerAdapter(piggyback=True))
    e.receive(wire("M", 7, 1, b"q"), A, 0.0)
    e.frame_oneway(("R", 8, 1, b"r"), B)
    e.frame_oneway(("R", 8, 2, b"r"), A)
    e.receive(wire("M", 7, 1, b"q"), A, 0.1)
    assert not e.outbox and e.counters.duplicates == 1


def test_the_dedup_window_is_the_delivery_logs_ttl() -> None:
    e = endpoint(dedup_ttl=1.0)
    e.receive(wire("M", 7, 1, b""), A, 0.0)
    e.receive(wire("M", 7, 1, b""), A, 0.9)
    e.receive(wire("M", 7, 1, b""), A, 1.1)  # past the window: delivered again
    assert len(e.inbox) == 2 and e.counters.duplicates == 1


def test_the_dedup_window_is_the_delivery_logs_capacity() -> None:
    e = endpoint(dedup_capacity=64, max_queue=10_000)
    e.receive(wire("M", 0, 0, b""), A, 0.0)
    for tx in range(1, 200):
        e.receive(wire("M", tx, tx, b""), A, 0.0)
    assert len(e.log) <= 64
    e.receive(wire("M", 0, 0, b""), A, 0.0)  # forgotten: delivered again
    assert e.counters.duplicates == 0 and len(e.inbox) == 201


def test_replies_are_not_recorded_so_a_peer_message_may_reuse_their_id() -> None:
    e = endpoint()
    p = e.start_request(("M", 5, 9, b"q"), A, Waiter(), 0.0, 1.0, None)
    assert e.receive(wire("R", 5, 9, b"r"), A, 0.01) is p  # (a piggybacked reply: our id)
    e.receive(wire("M", 5, 3, b"theirs"), A, 0.02)  # the peer's own message, same id
    assert len(e.inbox) == 1 and e.counters.duplicates == 0


# ---------------------------------------------------------------------- ack_for


def test_ack_for_answers_late_and_unknown_replies() -> None:
    e = endpoint()
    e.receive(wire("R", 3, 99, b"late"), A, 0.0)
    assert e.counters.unknown_replies == 1
    assert sent(e) == [(("A", 3, 0, b""), A)]  # the peer stops resending it


def test_drop_is_counted_as_ignored_and_answered() -> None:
    e = endpoint()
    e.receive(wire("D", 4, 0, b""), A, 0.0)
    assert e.counters.ignored == 1 and not e.inbox
    assert sent(e) == [(("A", 4, 0, b""), A)]


def test_a_message_dropped_for_a_full_queue_gets_no_ack_so_its_sender_retries() -> None:
    e = endpoint(max_queue=1)
    e.receive(wire("M", 1, 1, b""), A, 0.0)
    e.receive(wire("M", 2, 2, b""), A, 0.0)
    assert e.counters.queue_drops == 1
    assert sent(e) == [(("A", 1, 0, b""), A)]
    e.inbox.clear()
    e.receive(wire("M", 2, 2, b""), A, 0.1)  # its retransmission: not a duplicate
    assert len(e.inbox) == 1 and sent(e) == [(("A", 2, 0, b""), A)]


# ---------------------------------------------------------------------- ACK and REJECT


def test_an_ack_stops_a_requests_retransmission_and_it_keeps_waiting() -> None:
    e = endpoint()
    p = e.start_request(("M", 5, 9, b"q"), A, Waiter(), 0.0, 10.0, RETRY)
    assert e.receive(wire("A", 5, 0, b""), A, 0.05) is None
    assert not p.done and e.counters.acks_received == 1
    assert e.handle_timer(0.1) == [] and not e.outbox  # no retransmission
    assert e.next_deadline() == pytest.approx(10.0)  # its next event: the deadline
    assert e.handle_timer(5.0) == [] and not e.outbox
    assert e.receive(wire("R", 77, 9, b"separate"), A, 5.0) is p
    assert p.result == ("R", 77, 9, b"separate") and e.counters.retransmissions == 0
    assert sent(e) == [(("A", 77, 0, b""), A)]  # the separate reply, ACKed
    assert not layer(e).by_tx and e.pending_count == 0


def test_an_acked_request_times_out_at_its_deadline_even_after_its_last_attempt() -> None:
    e = endpoint()
    p = e.start_request(("M", 5, 9, b"q"), A, Waiter(), 0.0, 10.0,
                        RetryPolicy(initial_timeout=0.1, max_attempts=2, jitter=0.0))
    e.handle_timer(0.1)  # the second and last attempt
    assert p.attempts == 2
    e.receive(wire("A", 5, 0, b""), A, 0.15)
    assert e.handle_timer(0.3) == []  # the policy is spent, but the peer has it
    assert e.handle_timer(10.0) == [p] and e.counters.timeouts == 1
    assert not layer(e).by_tx


def test_an_ack_samples_the_round_trip_once() -> None:
    e = endpoint()
    e.start_request(("M", 5, 9, b"q"), A, Waiter(), 0.0, 10.0, RETRY)
    e.receive(wire("A", 5, 0, b""), A, 0.02)
    e.receive(wire("R", 6, 9, b""), A, 3.0)  # the separate reply's wait is the peer's
    assert e.rtt.rto(A) < 1.0


def test_a_reject_fails_the_request_at_once() -> None:
    e = endpoint()
    p = e.start_request(("M", 5, 9, b"q"), A, Waiter(), 0.0, 10.0, RETRY)
    assert e.receive(wire("X", 5, 0, b"no"), A, 0.01) is None
    assert layer(e).failed == [p] and p.done
    assert isinstance(p.result, PeerRejected)
    assert p.result.msg == ("X", 5, 0, b"no") and p.result.key == 9 and p.result.addr == A
    assert e.counters.rejected == 1 and e.pending_count == 0 and not layer(e).by_tx
    assert e.handle_timer(1.0) == [] and not e.outbox


def test_a_notify_waits_for_its_ack_and_retransmits_until_then() -> None:
    e = endpoint()
    p = e.start_notify(("M", 8, 1, b"n"), A, Waiter(), 0.0, 10.0, RETRY)
    assert p.frame == wire("M", 8, 1, b"n") and e.pending_count == 1
    e.handle_timer(0.1)
    e.handle_timer(0.31)
    assert [data for data, _ in e.outbox] == [p.frame] * 2
    assert e.receive(wire("A", 8, 0, b""), A, 0.35) is p
    assert p.done and p.result is None and e.pending_count == 0
    assert e.counters.acks_received == 1 and e.counters.notifies == 1


def test_a_notify_is_failed_by_a_reject() -> None:
    e = endpoint()
    p = e.start_notify(("M", 8, 1, b"n"), A, Waiter(), 0.0, 10.0, RETRY)
    assert e.receive(wire("X", 8, 0, b""), A, 0.01) is None
    assert layer(e).failed == [p] and isinstance(p.result, PeerRejected)
    assert e.pending_count == 0


def test_acks_and_rejects_for_nothing_or_from_elsewhere_are_unknown() -> None:
    e = endpoint()
    p = e.start_request(("M", 5, 9, b"q"), A, Waiter(), 0.0, 10.0, RETRY)
    e.receive(wire("A", 5, 0, b""), EVIL, 0.01)
    e.receive(wire("X", 5, 0, b""), EVIL, 0.01)
    e.receive(wire("A", 6, 0, b""), A, 0.01)
    e.receive(wire("A", None, 0, b""), A, 0.01)
    assert e.counters.unknown_acks == 4 and not p.done and not layer(e).failed
    e.receive(wire("A", 5, 0, b""), A, 0.02)
    e.receive(wire("A", 5, 0, b""), A, 0.03)  # a second ACK finds nothing more to stop
    assert e.counters.acks_received == 1 and e.counters.unknown_acks == 5


def test_check_source_off_lets_an_ack_come_from_anywhere() -> None:
    e = endpoint(check_source=False)
    p = e.start_notify(("M", 8, 1, b"n"), A, Waiter(), 0.0, 10.0, RETRY)
    assert e.receive(wire("A", 8, 0, b""), EVIL, 0.01) is p


def test_a_cancelled_or_closed_call_is_found_by_no_ack() -> None:
    e = endpoint()
    p = e.start_request(("M", 5, 9, b"q"), A, Waiter(), 0.0, 10.0, RETRY)
    e.cancel(p)
    assert not layer(e).by_tx
    e.receive(wire("A", 5, 0, b""), A, 0.01)
    assert e.counters.unknown_acks == 1
    e.start_notify(("M", 8, 1, b"n"), A, Waiter(), 0.0, 10.0, RETRY)
    assert len(e.close()) == 1 and not layer(e).by_tx


def test_two_pending_calls_may_not_share_a_transaction_key() -> None:
    e = endpoint()
    e.start_request(("M", 5, 9, b"q"), A, Waiter(), 0.0, 10.0, RETRY)
    with pytest.raises(DuplicateKeyError, match="transaction key 5"):
        e.start_request(("M", 5, 10, b"q"), A, Waiter(), 0.0, 10.0, RETRY)
    with pytest.raises(DuplicateKeyError):
        e.start_notify(("M", 5, 11, b"n"), B, Waiter(), 0.0, 10.0, RETRY)
    assert e.pending_count == 1 and e.counters.requests == 1


def test_notify_needs_classify_and_transaction_key_and_a_key_to_name() -> None:
    class OnlyAckFor(KeyAdapter):
        def ack_for(self, msg: Any) -> None:
            return None

    plain: Endpoint[Any] = Endpoint(OnlyAckFor(), framing="raw")
    with pytest.raises(ReliabilityUnavailable):
        plain.start_notify((1, b""), A, Waiter(), 0.0, 1.0, RETRY)
    e = endpoint()
    with pytest.raises(ReliabilityUnavailable, match="None"):
        e.start_notify(("M", None, 1, b"n"), A, Waiter(), 0.0, 1.0, RETRY)
    assert e.pending_count == 0


# ---------------------------------------------------------------------- accept


@pytest.mark.parametrize("framing", ["ack", "raw"])
@pytest.mark.parametrize("adapter", [FlagAdapter, TwoLayerAdapter], ids=["plain", "layered"])
def test_an_unaccepted_reply_is_dropped_and_the_call_keeps_waiting(
    framing: Any, adapter: Any
) -> None:
    client: Endpoint[Any] = Endpoint(adapter(), framing=framing, seed=1)
    server: Endpoint[Any] = Endpoint(adapter(), framing=framing, seed=2)
    request: Any
    bad: Any
    good: Any
    if adapter is FlagAdapter:
        request, bad, good = (9, b"q", False), (9, b"bad", True), (9, b"good", True)
    else:
        request, bad, good = ("M", 5, 9, b"q"), ("R", 5, 9, b"bad"), ("R", 5, 9, b"good")
    p = client.start_request(request, A, Waiter(), 0.0, 10.0, None,
                             lambda reply: reply[-1] != b"bad" if adapter is TwoLayerAdapter
                             else reply[1] != b"bad")
    assert client.receive(server.frame_oneway(bad, B), A, 0.01) is None
    assert not p.done and client.counters.unaccepted == 1 and not client.inbox
    assert client.receive(server.frame_oneway(good, B), A, 0.02) is p
    assert p.result == good and client.counters.replies_matched == 1


@pytest.mark.parametrize("adapter", [FlagAdapter, TwoLayerAdapter], ids=["plain", "layered"])
def test_an_accept_that_raises_refuses_the_reply(adapter: Any) -> None:
    client: Endpoint[Any] = Endpoint(adapter(), framing="raw", seed=1)
    request: Any
    reply: Any
    request, reply = (((9, b"q", False), (9, b"r", True)) if adapter is FlagAdapter
                      else (("M", 5, 9, b"q"), ("R", 5, 9, b"r")))
    seen: list[str] = []
    client.report = lambda reason, addr, detail: seen.append(reason)

    def broken(msg: Any) -> bool:
        raise RuntimeError("boom")

    p = client.start_request(request, A, Waiter(), 0.0, 10.0, None, broken)
    client.receive(client.adapter.msg_to_raw(reply), A, 0.01)
    assert not p.done and client.counters.unaccepted == 1
    assert seen == ["accept", "unaccepted"]


# ---------------------------------------------------------------------- bad adapters


@pytest.mark.parametrize("method", ["classify", "transaction_key", "ack_for"])
def test_an_adapter_method_that_raises_drops_the_datagram_as_a_decode_error(method: str) -> None:
    adapter = TwoLayerAdapter()

    def boom(msg: Any) -> Any:
        raise ValueError("boom")

    setattr(adapter, method, boom)
    e = endpoint(adapter)
    e.receive(wire("M", 1, 1, b""), A, 0.0)
    assert e.counters.decode_errors == 1 and not e.inbox and not e.outbox


def test_classify_must_return_a_kind() -> None:
    adapter = TwoLayerAdapter()
    adapter.classify = lambda msg: "message"  # type: ignore[assignment,return-value]
    e = endpoint(adapter)
    e.receive(wire("M", 1, 1, b""), A, 0.0)
    assert e.counters.decode_errors == 1


def test_a_failing_transaction_key_on_a_call_is_an_adapter_error() -> None:
    adapter = TwoLayerAdapter()

    def boom(msg: Any) -> Any:
        raise ValueError("boom")

    adapter.transaction_key = boom  # type: ignore[method-assign]
    e = endpoint(adapter)
    with pytest.raises(AdapterError, match="transaction_key"):
        e.start_request(("M", 1, 1, b""), A, Waiter(), 0.0, 1.0, None)
    assert e.pending_count == 0 and e.counters.requests == 0


def test_kind_has_the_five_answers() -> None:
    assert [k.name for k in Kind] == ["MESSAGE", "REPLY", "ACK", "REJECT", "DROP"]


def test_a_reused_transaction_key_with_another_key_is_a_new_message() -> None:
    """16-bit ids wrap within the dedup window: (sender, id) alone would answer a new
    request with the old one's cached reply."""
    e = endpoint(TwoLayerAdapter(piggyback=True))
    e.receive(wire("M", 7, 1, b"first"), A, 0.0)
    e.frame_oneway(("R", 7, 1, b"first's reply"), A)
    e.receive(wire("M", 7, 2, b"second, same id"), A, 5.0)
    assert [r.msg[2] for r in e.inbox] == [1, 2] and not e.outbox
    e.receive(wire("M", 7, 1, b"first"), A, 5.1)  # the old one is forgotten: new again
    assert len(e.inbox) == 3 and e.counters.duplicates == 0
