"""Properties of the message layer over raw framing, with the core alone and a fake clock:
no interleaving of loss, duplication and reordering runs a request twice, ends a call
twice or leaves anything behind; and the layered receive path does what the plain one
does for an adapter whose classify says only what is_reply says."""

from __future__ import annotations

import heapq
import random
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from aiodisp import RetryPolicy
from aiodisp._core.endpoint import Endpoint, Pending
from tests.helpers.adapters import FlagAdapter
from tests.helpers.two_layer import ClassifyFlagAdapter, TwoLayerAdapter

A = ("a", 1)
B = ("b", 2)
EVIL = ("evil", 6)
POLICY = RetryPolicy(initial_timeout=0.05, max_attempts=None, jitter=0.2, max_interval=0.5)


class Net:
    """A client and a server endpoint (raw framing) and a faulty network between them."""

    def __init__(self, seed: int, loss: float, dup: float, reorder: float, piggyback: bool
                 ) -> None:
        self.rng = random.Random(seed)
        self.loss, self.dup, self.reorder = loss, dup, reorder
        self.now = 0.0
        self.ends = {
            A: Endpoint(TwoLayerAdapter(piggyback=piggyback), framing="raw", seed=seed + 1),
            B: Endpoint(TwoLayerAdapter(piggyback=piggyback), framing="raw", seed=seed + 2),
        }
        self.wire: list[tuple[float, int, bytes, Any, Any]] = []
        self.seq = 0
        self.completed: dict[Any, list[Pending]] = {A: [], B: []}
        self.expired: dict[Any, list[Pending]] = {A: [], B: []}

    def send(self, data: bytes, src: Any, dst: Any) -> None:
        if self.rng.random() < self.loss:
            return
        for _ in range(2 if self.rng.random() < self.dup else 1):
            delay = 0.01 + (self.rng.random() * 0.2 if self.rng.random() < self.reorder else 0)
            self.seq += 1
            heapq.heappush(self.wire, (self.now + delay, self.seq, data, src, dst))

    def flush(self, me: Any) -> None:
        end = self.ends[me]
        other = B if me == A else A
        for data, addr in end.outbox:
            assert addr == other
            self.send(data, me, other)
        end.outbox.clear()

    def step(self) -> Any:
        """Advance to the next event; the endpoint it happened at, or None when idle."""
        timers = [(t, k) for k, e in self.ends.items() if (t := e.next_deadline()) is not None]
        next_wire = self.wire[0][0] if self.wire else None
        next_timer = min(timers) if timers else None
        if next_wire is None and next_timer is None:
            return None
        if next_timer is None or (next_wire is not None and next_wire <= next_timer[0]):
            self.now, _, data, src, dst = heapq.heappop(self.wire)
            p = self.ends[dst].receive(data, src, self.now)
            if p is not None:
                self.completed[dst].append(p)
            self.flush(dst)
            return dst
        self.now, who = next_timer
        self.expired[who].extend(self.ends[who].handle_timer(self.now))
        self.flush(who)
        return who


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32),
    loss=st.floats(0.0, 0.5),
    dup=st.floats(0.0, 0.5),
    reorder=st.floats(0.0, 0.8),
    count=st.integers(1, 30),
    piggyback=st.booleans(),
)
def test_requests_run_once_every_call_ends_once_and_nothing_is_left(
    seed: int, loss: float, dup: float, reorder: float, count: int, piggyback: bool
) -> None:
    """CoAP's shape: CON requests keyed by token, their transaction key the Message ID;
    the server answers piggybacked (its reply is the ACK) or with an empty ACK at once
    and a separate reply it sends reliably (notify) until the client ACKs it."""
    net = Net(seed, loss, dup, reorder, piggyback)
    client, server = net.ends[A], net.ends[B]
    for i in range(count):
        p = client.start_request(("M", i, i, b"q"), B, None, net.now, 30.0, POLICY)
        assert p.frame is not None
        net.send(p.frame, A, B)
    handled: list[int] = []
    while (where := net.step()) is not None:
        if where == B:
            while server.inbox:  # the application: answer at once
                (_kind, tx, key, _payload), _size, addr = server.inbox.popleft()
                handled.append(key)
                if piggyback:
                    net.send(server.frame_oneway(("R", tx, key, b"r"), addr), B, A)
                else:
                    n = server.start_notify(("R", 1000 + key, key, b"r"), addr, None, net.now,
                                            30.0, POLICY)
                    assert n.frame is not None
                    net.send(n.frame, B, A)
    assert len(handled) == len(set(handled)), "a retransmitted request ran twice"
    done = net.completed[A] + net.expired[A]
    assert len(done) == len({id(p) for p in done}) == count, "a call ended twice or never"
    for p in net.completed[A]:
        assert p.result[2] == p.key
    if loss < 0.5:  # unlimited retries for 30 s: everything gets through
        assert sorted(p.result[2] for p in net.completed[A]) == list(range(count))
        if not piggyback:
            assert len(net.completed[B]) == count  # every separate reply was ACKed
    for end in (client, server):
        assert end.pending_count == 0 and end.layer is not None and not end.layer.by_tx
        assert not end.layer.failed


KEYS = st.integers(0, 3)
EVENTS = st.lists(
    st.one_of(
        st.tuples(st.just("request"), KEYS),
        st.tuples(st.just("datagram"), KEYS, st.booleans(), st.sampled_from([A, EVIL]),
                  st.binary(max_size=3)),
        st.tuples(st.just("garbage"), st.binary(max_size=8)),
        st.tuples(st.just("time"), st.floats(0.0, 0.5)),
    ),
    max_size=40,
)


@settings(max_examples=150, deadline=None)
@given(events=EVENTS, check_source=st.booleans(), max_queue=st.integers(1, 4))
def test_the_layered_path_does_what_the_plain_path_does_for_is_reply(
    events: list[Any], check_source: bool, max_queue: int
) -> None:
    """The message layer's receive is a second receive path: pinned to the plain one."""
    plain = Endpoint(FlagAdapter(), framing="raw", seed=1, check_source=check_source,
                     max_queue=max_queue)
    layered = Endpoint(ClassifyFlagAdapter(), framing="raw", seed=1,
                       check_source=check_source, max_queue=max_queue)
    assert plain.layer is None and layered.layer is not None
    now = 0.0
    for event in events:
        outcomes: list[Any] = []
        if event[0] == "time":
            now += event[1]
        for e in (plain, layered):
            if event[0] == "request":
                if event[1] in e.waiting:
                    outcomes.append("duplicate")
                    continue
                started = e.start_request((event[1], b"q", False), A, None, now, 1.0, None)
                outcomes.append(started.frame)
            elif event[0] == "datagram":
                _, key, is_reply, src, payload = event
                data = FlagAdapter().msg_to_raw((key, payload, is_reply))
                done = e.receive(data, src, now)
                outcomes.append(None if done is None else (done.key, done.result))
            elif event[0] == "garbage":
                outcomes.append(e.receive(event[1], A, now))
            else:
                outcomes.append(sorted(repr(p.key) for p in e.handle_timer(now)))
        assert outcomes[0] == outcomes[1]
        assert list(plain.inbox) == list(layered.inbox)
        assert plain.outbox == layered.outbox
        assert plain.stats() == layered.stats()
        assert set(plain.waiting) == set(layered.waiting)
