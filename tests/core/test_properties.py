"""Property: no interleaving of loss, duplication and reordering delivers a message
twice or loses one that was ACKed (or answered), with the core alone and a fake clock."""

from __future__ import annotations

import heapq
import random
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from aiodisp import RetryPolicy
from aiodisp._core.endpoint import Endpoint, Pending
from tests.helpers.adapters import FlagAdapter

A = ("a", 1)
B = ("b", 2)


class Net:
    """Two endpoints and a faulty network between them, on simulated time."""

    def __init__(self, seed: int, loss: float, dup: float, reorder: float, max_queue: int) -> None:
        self.rng = random.Random(seed)
        self.loss, self.dup, self.reorder = loss, dup, reorder
        self.now = 0.0
        self.ends = {
            A: Endpoint(FlagAdapter(), seed=seed + 1, max_queue=max_queue),
            B: Endpoint(FlagAdapter(), seed=seed + 2, max_queue=max_queue),
        }
        self.wire: list[tuple[float, int, bytes, Any, Any]] = []
        self.seq = 0
        self.completed: dict[Any, list[Pending]] = {A: [], B: []}
        self.expired: dict[Any, list[Pending]] = {A: [], B: []}

    def send(self, data: bytes, src: Any, dst: Any) -> None:
        if self.rng.random() < self.loss:
            return
        copies = 2 if self.rng.random() < self.dup else 1
        for _ in range(copies):
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

    def step(self) -> bool:
        """Advance to the next event (a datagram or a timer); False when idle."""
        timers = [(t, k) for k, e in self.ends.items() if (t := e.next_deadline()) is not None]
        next_wire = self.wire[0][0] if self.wire else None
        next_timer = min(timers) if timers else None
        if next_wire is None and next_timer is None:
            return False
        if next_timer is None or (next_wire is not None and next_wire <= next_timer[0]):
            self.now, _, data, src, dst = heapq.heappop(self.wire)
            p = self.ends[dst].receive(data, src, self.now)
            if p is not None:
                self.completed[dst].append(p)
            self.flush(dst)
        else:
            self.now, who = next_timer
            self.expired[who].extend(self.ends[who].handle_timer(self.now))
            self.flush(who)
        return True


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32),
    loss=st.floats(0.0, 0.5),
    dup=st.floats(0.0, 0.5),
    reorder=st.floats(0.0, 0.8),
    count=st.integers(1, 40),
    reader_every=st.integers(1, 5),
)
def test_notifies_are_delivered_once_and_every_acked_one_arrived(
    seed: int, loss: float, dup: float, reorder: float, count: int, reader_every: int
) -> None:
    net = Net(seed, loss, dup, reorder, max_queue=8)
    sender, receiver = net.ends[A], net.ends[B]
    policy = RetryPolicy(initial_timeout=0.05, max_attempts=None, jitter=0.2, max_interval=0.5)
    for i in range(count):
        p = sender.start_notify((i, b"n", False), B, None, net.now, 30.0, policy)
        assert p.frame is not None
        net.send(p.frame, A, B)
    delivered: list[int] = []
    steps = 0
    while net.step():
        steps += 1
        if steps % reader_every == 0:
            while receiver.inbox:
                delivered.append(receiver.inbox.popleft().msg[0])
    delivered.extend(r.msg[0] for r in receiver.inbox)
    assert len(delivered) == len(set(delivered)), "a message was delivered twice"
    acked = {p.key for p in net.completed[A]}
    assert acked <= set(delivered), "an ACKed message never reached the application"
    if loss < 0.5:
        # with unlimited retries for 30 s, everything gets through
        assert acked == set(range(count)) == set(delivered)


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32),
    loss=st.floats(0.0, 0.5),
    dup=st.floats(0.0, 0.5),
    reorder=st.floats(0.0, 0.8),
    count=st.integers(1, 40),
)
def test_requests_are_served_once_and_answered_with_their_own_reply(
    seed: int, loss: float, dup: float, reorder: float, count: int
) -> None:
    net = Net(seed, loss, dup, reorder, max_queue=1000)
    client, server = net.ends[A], net.ends[B]
    policy = RetryPolicy(initial_timeout=0.05, max_attempts=None, jitter=0.2, max_interval=0.5)
    for i in range(count):
        p = client.start_request((i, b"q", False), B, None, net.now, 30.0, policy)
        assert p.frame is not None
        net.send(p.frame, A, B)
    served: list[int] = []
    while net.step():
        while server.inbox:
            msg, _size, addr = server.inbox.popleft()
            served.append(msg[0])
            net.send(server.frame_oneway((msg[0], b"r%d" % msg[0], True), addr), B, A)
    assert len(served) == len(set(served)), "a request reached the application twice"
    for p in net.completed[A]:
        assert isinstance(p.key, int)
        assert p.result == (p.key, b"r%d" % p.key, True)
    answered = {p.key for p in net.completed[A]}
    assert answered <= set(served)
    assert len(net.completed[A]) == len(answered)
    assert answered | {p.key for p in net.expired[A]} == set(range(count))
    if loss < 0.5:
        assert answered == set(range(count))
