"""The core's deliberate hot-path copies, pinned to their originals.

``start_request`` inlines ``encode()``, ``_frame()``, ``new_pending()`` and the
peer's window accounting (``_started()``, itself ``Windows.started()``);
``frame_oneway`` inlines ``encode()`` and ``_frame()``. Each copy is driven here
through the same cases as the original: every slot of the Pending it builds,
the frame bytes, and every way encoding can fail.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aiodisp import AdapterError, DuplicateKeyError, MessageTooLarge, RetryPolicy
from aiodisp._core.congestion import Peer
from aiodisp._core.endpoint import Endpoint
from aiodisp._core.framing import FLAG_ACK_REQUESTED, unpack_header
from aiodisp._core.pending import NOTIFY, REQUEST, Pending, new_pending
from tests.helpers.adapters import KeyAdapter

PEER = ("192.0.2.1", 7)
_UNSET = object()


def endpoint(framing: str = "ack", adapter: Any = None, **kw: Any) -> Endpoint[Any]:
    return Endpoint(adapter or KeyAdapter(), framing=framing, seed=3, **kw)  # type: ignore[arg-type]


def slots(p: Pending) -> dict[str, Any]:
    """Every slot of ``p``; its peer (an object of its own endpoint) as that peer's state."""
    out = {name: getattr(p, name, _UNSET) for name in Pending.__slots__}
    peer = out["peer"]
    if peer is not _UNSET:
        out["peer"] = {name: getattr(peer, name) for name in Peer.__slots__}
    lane = out["lane"]
    if isinstance(lane, dict):  # a lane of its own endpoint's schedule: which calls it holds
        out["lane"] = ["this call" if call is p else call for call in lane]
    return out


def reference_frame(e: Endpoint[Any], msg: Any, flags: int) -> tuple[bytes, int]:
    """What encode() and _frame() give for ``msg`` (advancing the packet ids as the copy does)."""
    _key, raw = e.encode(msg)
    return e._frame(flags, raw)


@pytest.mark.parametrize("framing", ["ack", "raw"])
@given(key=st.integers(0, 2**64 - 1), payload=st.binary(max_size=64))
def test_start_request_builds_what_new_pending_and_frame_build(
    framing: str, key: int, payload: bytes
) -> None:
    copy, original = endpoint(framing), endpoint(framing)
    waiter = object()
    p = copy.start_request((key, payload), PEER, waiter, 1.0, 2.0, None)
    frame, packet_id = reference_frame(original, (key, payload), 0)
    q = new_pending(REQUEST, key, PEER, frame, packet_id, waiter, 1.0, 3.0)
    original._started(q, 1.0)
    mine, theirs = slots(p), slots(q)
    # the schedule's lane is where the copy filed the call; new_pending() files nothing
    assert mine.pop("lane") is not None and theirs.pop("lane") is None
    assert mine == theirs
    assert copy.waiting == {key: p} and copy.counters.requests == 1
    assert copy.throttled == original.throttled


@given(payload=st.binary(max_size=64))
def test_start_request_with_a_policy_matches_new_pending_plus_its_schedule(payload: bytes) -> None:
    copy, original = endpoint(), endpoint()
    policy = RetryPolicy(initial_timeout=0.1, jitter=0.0)
    p = copy.start_request((1, payload), PEER, None, 0.0, 5.0, policy)
    frame, packet_id = reference_frame(original, (1, payload), 0)
    q = new_pending(REQUEST, 1, PEER, frame, packet_id, None, 0.0, 5.0)
    original._schedule_first(q, policy, 0.0)
    original._started(q, 0.0)
    assert slots(p) == slots(q)


@pytest.mark.parametrize("framing", ["ack", "raw"])
@given(payload=st.binary(max_size=64))
def test_frame_oneway_frames_as_encode_and_frame_do(framing: str, payload: bytes) -> None:
    copy, original = endpoint(framing), endpoint(framing)
    assert copy.frame_oneway((5, payload), PEER) == reference_frame(original, (5, payload), 0)[0]
    assert copy.counters.notifies == 1


@given(payload=st.binary(max_size=64))
def test_start_notify_frames_with_the_ack_requested_flag(payload: bytes) -> None:
    copy, original = endpoint(), endpoint()
    p = copy.start_notify((5, payload), PEER, None, 0.0, 1.0, None)
    frame, packet_id = reference_frame(original, (5, payload), FLAG_ACK_REQUESTED)
    assert (p.frame, p.packet_id, p.kind) == (frame, packet_id, NOTIFY)
    assert unpack_header(frame) == (FLAG_ACK_REQUESTED, packet_id)


class Broken(KeyAdapter):
    def __init__(self, fault: str) -> None:
        self.fault = fault

    def msg_key(self, msg: tuple[int, bytes]) -> Any:
        if self.fault == "key raises":
            raise KeyError("no key")
        if self.fault == "key unhashable":
            return [1]
        return msg[0]

    def msg_to_raw(self, msg: tuple[int, bytes]) -> Any:
        if self.fault == "encode raises":
            raise ValueError("cannot encode")
        if self.fault == "not bytes":
            return "text"
        if self.fault == "bytearray":
            return bytearray(super().msg_to_raw(msg))
        return super().msg_to_raw(msg)


def outcome(fn: Any, *args: Any) -> tuple[str, str]:
    try:
        result = fn(*args)
    except Exception as exc:
        return type(exc).__name__, str(exc)
    frame = result if isinstance(result, bytes) else result.frame
    return "ok", frame.hex()


@pytest.mark.parametrize("framing", ["ack", "raw"])
@pytest.mark.parametrize("fault", ["key raises", "encode raises", "not bytes", "bytearray"])
def test_every_copy_fails_as_encode_fails(framing: str, fault: str) -> None:
    msg = (1, b"x")
    original = endpoint(framing, Broken(fault))
    try:
        _key, raw = original.encode(msg)
        expected = ("ok", original._frame(0, raw)[0].hex())
    except AdapterError as exc:
        expected = ("AdapterError", str(exc))
    oneway = outcome(endpoint(framing, Broken(fault)).frame_oneway, msg, PEER)
    if framing == "raw" and fault == "key raises":
        # the one deliberate difference: a one-way message over raw framing needs no key
        # (it caches no reply), so frame_oneway does not ask for it
        assert oneway[0] == "ok"
    else:
        assert oneway == expected
    request = endpoint(framing, Broken(fault)).start_request
    assert outcome(request, msg, PEER, None, 0.0, 1.0, None) == expected


@pytest.mark.parametrize("framing", ["ack", "raw"])
def test_every_copy_refuses_a_datagram_past_the_limit(framing: str) -> None:
    big = (1, b"x" * 100)
    e = endpoint(framing, max_datagram_size=64)
    with pytest.raises(MessageTooLarge):
        e.frame_oneway(big, PEER)
    with pytest.raises(MessageTooLarge):
        e.start_request(big, PEER, None, 0.0, 1.0, None)
    assert e.pending_count == 0
    with pytest.raises(MessageTooLarge):
        endpoint(framing, max_datagram_size=64)._frame(0, b"x" * 108)


def test_start_request_refuses_an_unhashable_or_pending_key() -> None:
    e = endpoint(adapter=Broken("key unhashable"))
    with pytest.raises(AdapterError, match="unhashable"):
        e.start_request((1, b""), PEER, None, 0.0, 1.0, None)
    e = endpoint()
    e.start_request((1, b""), PEER, None, 0.0, 1.0, None)
    with pytest.raises(DuplicateKeyError):
        e.start_request((1, b""), PEER, None, 0.0, 1.0, None)
    assert e.pending_count == 1 and e.counters.requests == 1


@pytest.mark.parametrize(("fault", "method"), [("key raises", "msg_key"),
                                               ("encode raises", "msg_to_raw"),
                                               ("not bytes", "msg_to_raw")])
def test_an_adapter_failure_names_the_method_that_failed(fault: str, method: str) -> None:
    with pytest.raises(AdapterError, match=rf"the adapter's {method}\(\)") as caught:
        endpoint(adapter=Broken(fault)).start_request((1, b""), PEER, None, 0.0, 1.0, None)
    assert "encode" not in str(caught.value) or method == "msg_to_raw"


def test_start_request_keeps_its_accept_where_the_reply_path_reads_it() -> None:
    """The copy's one extra slot: ``accept`` (new_pending() leaves it None, as the copy
    does without one)."""
    def accept(reply: Any) -> bool:
        return True

    e = endpoint()
    with_accept = e.start_request((1, b""), PEER, object(), 0.0, 1.0, None, accept)
    without = e.start_request((2, b""), PEER, object(), 0.0, 1.0, None)
    assert with_accept.accept is accept and without.accept is None
