"""Bundles (``coalesce=True``) without I/O: the format, the Bundler, and the endpoint
taking a bundle's datagrams exactly as if each had come alone (fake clock, hypothesis)."""

from __future__ import annotations

import struct
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aiodisp import RetryPolicy
from aiodisp._core.bundling import (
    BUNDLE_LIMIT,
    FLAG_BUNDLE,
    MIN_BUNDLE,
    RECORD_OVERHEAD,
    Bundler,
    pack_bundle,
    split_bundle,
)
from aiodisp._core.congestion import INITIAL_WINDOW
from aiodisp._core.endpoint import Endpoint, Pending
from aiodisp._core.framing import (
    FLAG_ACK,
    FLAG_ACK_REQUESTED,
    FLAG_REPLY,
    ack_for,
    pack_header,
)
from aiodisp.stats import COUNTED
from tests.helpers.adapters import FlagAdapter

A = ("10.0.0.1", 1000)  # the endpoint under test
B = ("10.0.0.2", 2000)  # its peer
ADDRS = ("p", "q", "r")
POLICY = RetryPolicy(initial_timeout=0.5, jitter=0.0, max_attempts=None)

#: A datagram a bundle may carry: at least a header, and not itself a bundle.
frames = st.binary(min_size=8, max_size=300).filter(lambda f: f[0] != FLAG_BUNDLE)


def record(frame: bytes) -> bytes:
    return struct.pack(">H", len(frame)) + frame


# ---------------------------------------------------------------------- the format


def test_the_format_is_the_marker_then_length_prefixed_datagrams() -> None:
    one, two = pack_header(0, 1) + b"abc", ack_for(7)
    assert pack_bundle([one, two]) == b"\x08" + b"\x00\x0b" + one + b"\x00\x08" + two
    assert FLAG_BUNDLE == 0x08 and RECORD_OVERHEAD == 2 and BUNDLE_LIMIT == 1200
    assert MIN_BUNDLE == 1 + 2 * (2 + 8)


def test_a_lone_frame_travels_as_itself() -> None:
    frame = pack_header(FLAG_ACK_REQUESTED, 5) + b"payload"
    assert pack_bundle([frame]) is frame


@settings(max_examples=300, deadline=None)
@given(st.lists(frames, min_size=2, max_size=20))
def test_pack_then_split_gives_the_frames_back(batch: list[bytes]) -> None:
    data = pack_bundle(batch)
    assert data[0] == FLAG_BUNDLE
    assert len(data) == 1 + sum(len(f) + RECORD_OVERHEAD for f in batch)
    assert split_bundle(data) == batch


def _checked_split(data: bytes) -> None:
    out = split_bundle(data)
    assert isinstance(out, list | str)
    if isinstance(out, str):
        assert out  # a reason a person can read
        return
    assert len(out) >= 2
    assert all(len(r) >= 8 and r[0] != FLAG_BUNDLE for r in out)
    # nothing is skipped or left over: the records are the whole datagram
    assert pack_bundle(out) == bytes([FLAG_BUNDLE]) + data[1:]


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=400))
def test_split_never_raises_on_arbitrary_bytes(data: bytes) -> None:
    _checked_split(data)
    _checked_split(bytes([FLAG_BUNDLE]) + data)


@settings(max_examples=500, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 40), st.binary(max_size=40)), max_size=6))
def test_split_never_raises_on_near_bundles(parts: list[tuple[int, bytes]]) -> None:
    """Length fields that lie about what follows (the arbitrary bytes rarely look so)."""
    data = bytes([FLAG_BUNDLE]) + b"".join(struct.pack(">H", n) + chunk for n, chunk in parts)
    _checked_split(data)


@settings(max_examples=200, deadline=None)
@given(st.lists(frames, min_size=2, max_size=8), st.data())
def test_a_truncated_bundle_is_rejected_whole(batch: list[bytes], data: st.DataObject) -> None:
    bundle = pack_bundle(batch)
    # cut inside the last record (its length field or its datagram): not at a boundary
    cut = data.draw(st.integers(1, len(batch[-1]) + 1))
    assert isinstance(split_bundle(bundle[:-cut]), str)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\x08", "bundle of one record"),
        (b"\x08" + record(ack_for(1)), "bundle of one record"),
        (b"\x08" + record(ack_for(1)) + b"\x00", "truncated bundle"),
        (b"\x08" + record(ack_for(1)) + b"\x00\x09" + ack_for(2), "truncated bundle"),
        (b"\x08" + record(ack_for(1)) + record(b"\x00" * 7), "7-byte record in a bundle"),
        (b"\x08" + record(b"") + record(ack_for(1)) + record(ack_for(2)),
         "0-byte record in a bundle"),
        (b"\x08" + record(ack_for(1)) + record(pack_bundle([ack_for(2), ack_for(3)])),
         "bundle inside a bundle"),
    ],
)
def test_malformed_bundles_say_why(data: bytes, reason: str) -> None:
    assert split_bundle(data) == reason


# ---------------------------------------------------------------------- the Bundler


ops = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.sampled_from(ADDRS), st.integers(8, 450)),
        st.just(("take", "", 0)),
    ),
    max_size=120,
)


@settings(max_examples=300, deadline=None)
@given(limit=st.integers(MIN_BUNDLE, 420), script=ops)
def test_the_bundler_keeps_every_frame_in_order_within_the_limit(
    limit: int, script: list[tuple[str, str, int]]
) -> None:
    bundler = Bundler(limit)
    added: list[tuple[bytes, str]] = []
    out: list[tuple[bytes, Any, list[bytes]]] = []
    closed: list[tuple[bytes, Any, list[bytes]]] = []  # what left before the drain

    def check_held(taken: bool) -> None:
        emitted = [f for _, _, held in out for f in held]
        assert len(bundler) == len(added) - len(emitted)
        if not taken:
            return
        # past take_ready(), what a destination holds is one open bundle, within the limit
        left = {id(f) for f in emitted}
        for addr in ADDRS:
            held = [f for f, a in added if a == addr and id(f) not in left]
            assert not held or 1 + sum(len(f) + RECORD_OVERHEAD for f in held) <= limit

    for op, addr, size in script:
        if op == "add":
            frame = pack_header(0, len(added)) + b"x" * (size - 8)  # each one distinct
            before = len(bundler.ready)
            assert bundler.add(frame, addr) == (len(bundler.ready) > before)
            added.append((frame, addr))
        else:
            taken = bundler.take_ready()
            out += taken
            closed += taken
        check_held(op == "take")
    closed += bundler.ready
    was_ready = len(bundler.ready)
    drained = bundler.drain()
    opened = [a for _, a, _ in drained[was_ready:]]
    assert len(opened) == len(set(opened))  # at most one open bundle per destination
    out += drained
    assert len(bundler) == 0 and not bundler.open and not bundler.ready

    for datagram, _addr, held in out:
        if len(held) == 1:
            assert datagram is held[0]  # a lone frame travels as itself
        else:
            assert len(datagram) <= limit
            assert split_bundle(datagram) == held
        if len(datagram) > limit:
            assert len(held) == 1 and len(held[0]) + RECORD_OVERHEAD + 1 > limit
    for addr in ADDRS:
        sent = [f for _, a, held in out if a == addr for f in held]
        assert sent == [f for f, a in added if a == addr]  # nothing lost, in order
    # a bundle left early only because the next frame to its destination did not fit
    for _datagram, addr, held in closed:
        later = [f for f, a in added if a == addr]
        nxt = later.index(held[-1]) + 1
        size = 1 + sum(len(f) + RECORD_OVERHEAD for f in held)
        if size <= limit and nxt < len(later):
            assert size + len(later[nxt]) + RECORD_OVERHEAD > limit


def test_a_full_bundle_is_ready_at_once_and_the_next_frame_opens_another() -> None:
    bundler = Bundler()
    frame = pack_header(0, 1) + bytes(390)  # 400 bytes in a record: two fit, three do not
    assert not bundler.add(frame, "p") and not bundler.add(frame, "p")
    assert not bundler.add(frame, "q")
    assert bundler.add(frame, "p")
    assert [(a, len(f)) for _, a, f in bundler.ready] == [("p", 2)]
    assert len(bundler) == 4 and len(bundler.open) == 2


def test_an_oversized_frame_closes_the_open_bundle_and_travels_alone_after_it() -> None:
    bundler = Bundler(100)
    small, big = ack_for(1), pack_header(0, 2) + bytes(200)
    bundler.add(small, "p")
    assert bundler.add(big, "p")
    assert bundler.drain() == [(small, "p", [small]), (big, "p", [big])]


def test_a_limit_below_the_smallest_bundle_is_refused() -> None:
    with pytest.raises(ValueError, match="at least"):
        Bundler(MIN_BUNDLE - 1)


# ---------------------------------------------------------------------- the endpoint


def make(seed: int, **options: Any) -> Endpoint[Any]:
    return Endpoint(FlagAdapter(), seed=seed, **options)


def scene(seed: int, e: Endpoint[Any]) -> tuple[list[bytes], list[Pending]]:
    """Calls of ``e`` to its peer and every kind of datagram the peer could send back.

    ``e`` has requests 0..5 and notifies 50..52 in flight to B. The pool holds:
    0x04 replies to requests 0..2 (the peer was delivered them), plain replies by
    key to 3..5 (it was not), a second reply to request 0, the peer's own
    notifies (asking ACKs) and plain messages, ACKs of e's notifies and an
    unknown ACK, and garbage a bundle may carry: unknown flags, an ACK with a
    payload, adapter bytes that do not decode, a 0x04 reply naming no call.
    """
    peer = make(seed + 1)
    calls = [e.start_request((k, b"q", False), B, None, 0.0, 30.0, POLICY) for k in range(6)]
    calls += [e.start_notify((k, b"n", False), B, None, 0.0, 30.0, POLICY)
              for k in range(50, 53)]
    pool: list[bytes] = []
    for p in calls[:3] + calls[6:]:
        assert p.frame is not None
        peer.receive(p.frame, A, 0.1)
    peer.inbox.clear()
    pool += [peer.frame_oneway((k, b"r%d" % k, True), A) for k in range(6)]
    pool.append(peer.frame_oneway((0, b"again", True), A))
    pool += [f for f, _ in peer.outbox]  # the ACKs of e's notifies
    peer.outbox.clear()
    pool += [
        p.frame for k in range(100, 103)
        if (p := peer.start_notify((k, b"pn", False), A, None, 0.1, 30.0, POLICY)).frame
    ]
    pool += [peer.frame_oneway((k, b"m", False), A) for k in range(200, 203)]
    pool += [
        ack_for(12345),
        pack_header(0x80, 1) + b"unknown flags",
        pack_header(0x03, 2) + b"two flags",
        pack_header(FLAG_ACK, 3) + b"payload",
        pack_header(0, 4) + b"abc",  # too short for the adapter
        pack_header(FLAG_REPLY, 5) + FlagAdapter().msg_to_raw((1, b"", True)),
    ]
    assert all(len(f) >= 8 and f[0] != FLAG_BUNDLE for f in pool)
    return pool, calls


def outcome(e: Endpoint[Any], completed: list[Pending]) -> dict[str, Any]:
    counters = {n: getattr(e.counters, n) for n in COUNTED if n != "bundles_received"}
    return {
        "inbox": list(e.inbox),
        "outbox": list(e.outbox),
        "completed": [(p.kind, p.key, p.result, p.packet_id) for p in completed],
        "waiting": sorted(e.waiting),
        "acking": sorted(e.acking),
        "counters": counters,
        "received": e.counters.received,
    }


@settings(max_examples=200, deadline=None)
@given(
    seed=st.integers(0, 2**32),
    max_queue=st.integers(1, 8),
    picks=st.lists(st.integers(0, 10_000), min_size=2, max_size=30),
)
def test_a_bundle_is_received_exactly_as_its_datagrams_one_by_one(
    seed: int, max_queue: int, picks: list[int]
) -> None:
    alone, bundled = make(seed, max_queue=max_queue), make(seed, max_queue=max_queue)
    pool, _ = scene(seed, alone)
    pool2, _ = scene(seed, bundled)
    assert pool == pool2  # the same seed: the same packet ids, the same datagrams
    batch = [pool[i % len(pool)] for i in picks]  # repeats are the network's duplicates

    completed = [p for f in batch if (p := alone.receive(f, B, 1.0)) is not None]
    assert bundled.receive(pack_bundle(batch), B, 1.0) is None
    assert outcome(bundled, bundled.completed) == outcome(alone, completed)
    assert (alone.counters.bundles_received, bundled.counters.bundles_received) == (0, 1)


@pytest.mark.parametrize(
    "bad",
    [
        record(b"\x00" * 7),
        record(pack_bundle([ack_for(1), ack_for(2)])),
        b"\x00\x40" + bytes(10),  # truncated
    ],
    ids=["short record", "nested bundle", "truncated"],
)
def test_a_malformed_bundle_is_dropped_whole_and_counted_once(bad: bytes) -> None:
    e, peer = make(1), make(2)
    request = e.start_request((1, b"q", False), B, None, 0.0, 30.0, POLICY)
    assert request.frame is not None
    peer.receive(request.frame, A, 0.0)
    reply = peer.frame_oneway((1, b"r", True), A)
    notify = peer.start_notify((9, b"n", False), A, None, 0.0, 30.0, POLICY).frame
    assert notify is not None
    data = b"\x08" + record(reply) + record(notify) + bad
    assert e.receive(data, B, 0.1) is None
    c = e.counters
    assert (c.header_errors, c.received, c.bundles_received) == (1, 1, 0)
    assert not e.inbox and not e.outbox and not e.completed and not request.done
    # the same datagrams, well bundled, are taken
    e.receive(pack_bundle([reply, notify]), B, 0.2)
    assert e.completed == [request] and len(e.inbox) == 1 and len(e.outbox) == 1


def _exchange(bundled: bool) -> tuple[Endpoint[Any], Endpoint[Any], list[Pending]]:
    """15 requests and 15 notifies to B, sent and answered (replies and ACKs) in bundles
    when ``bundled``, each in a datagram of its own otherwise; 20 answered."""
    client, server = make(7, congestion=True), make(8, congestion=True)
    calls = [client.start_request((k, b"q", False), B, None, 0.0, 30.0, POLICY)
             for k in range(15)]
    calls += [client.start_notify((k, b"n", False), B, None, 0.0, 30.0, POLICY)
              for k in range(100, 115)]
    sent = [p.frame for p in calls if p.frame is not None]
    if bundled:
        server.receive(pack_bundle(sent), A, 0.05)
    else:
        for f in sent:
            server.receive(f, A, 0.05)
    requests = [r for r in server.inbox if not r.msg[0] >= 100]
    answers = [server.frame_oneway((r.msg[0], b"r", True), A) for r in requests[:10]]
    answers += [f for f, _ in server.outbox[:10]]  # ten of the ACKs
    done: list[Pending] = []
    if bundled:
        client.receive(pack_bundle(answers[:7]), B, 0.1)
        client.receive(pack_bundle(answers[7:]), B, 0.1)
        done = client.completed
    else:
        done = [p for f in answers if (p := client.receive(f, B, 0.1)) is not None]
    return client, server, done


def test_the_window_counts_the_messages_of_a_bundle_not_the_bundle() -> None:
    one_each, server1, done1 = _exchange(bundled=False)
    together, server2, done2 = _exchange(bundled=True)
    assert len(done1) == len(done2) == 20
    assert [p.key for p in done1] == [p.key for p in done2]
    assert together.counters.bundles_received == 2 and server2.counters.bundles_received == 1
    assert server1.counters.delivered == server2.counters.delivered == 30
    # 30 in flight in a window of 10: each of the first answers grows it by one
    # (slow start), until fewer are in flight than it allows
    window = one_each.window(B)
    assert window is not None and window > INITIAL_WINDOW + 2
    assert together.window(B) == window
    peer1, peer2 = one_each.windows.peers[B], together.windows.peers[B]
    assert (peer2.in_flight, peer2.cwnd) == (peer1.in_flight, peer1.cwnd) == (10, window)


@settings(max_examples=100, deadline=None)
@given(
    pipeline=st.integers(1, 6),
    first=st.integers(1, 60),
    second=st.integers(1, 60),
    peers=st.integers(1, 3),
)
def test_a_bundle_holds_a_share_of_what_the_last_iteration_sent(
    pipeline: int, first: int, second: int, peers: int
) -> None:
    """After an iteration that sent ``n`` frames to each of ``peers`` destinations, a
    bundle closes at max(2, n // pipeline) frames: about ``pipeline`` bundles an
    iteration, so a peer works on the first while the rest are still being made."""
    bundler = Bundler(65_000, pipeline=pipeline)
    frame = pack_header(0, 1) + b"x" * 8
    addrs = [f"p{i}" for i in range(peers)]
    for _ in range(first):
        for addr in addrs:
            bundler.add(frame, addr)
    bundler.drain()
    cap = max(2, first // pipeline)
    for _ in range(second):
        for addr in addrs:
            bundler.add(frame, addr)
    sizes = [len(held) for _, _, held in bundler.drain()]
    assert sum(sizes) == second * peers
    assert max(sizes) == min(cap, second)
    assert all(size == cap for size in sizes[:-peers])  # (each peer's last may be short)


def test_without_a_pipeline_a_bundle_fills_up_to_its_limit() -> None:
    bundler = Bundler(65_000, pipeline=0)
    frame = pack_header(0, 1) + b"x" * 8
    for _ in range(3):
        for _ in range(100):
            bundler.add(frame, "p")
        assert [len(held) for _, _, held in bundler.drain()] == [100]
