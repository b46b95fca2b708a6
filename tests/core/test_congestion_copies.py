"""The endpoint's inlined window accounting, pinned to :class:`Windows`' methods.

``start_request`` inlines ``Windows.started()``; the reply path of
``receive()`` inlines ``Windows.answered_call()`` (and calls ``grow()`` only
when the window was in use). Each copy is driven here through the same cases
as its original, and the peer's whole state compared after every step.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from aiodisp import RetryPolicy
from aiodisp._core.congestion import Peer, Windows
from aiodisp._core.endpoint import Endpoint
from tests.helpers.adapters import KeyAdapter

A = ("10.0.0.1", 1000)  # the server
B = ("10.0.0.2", 2000)  # the client


def state(peer: Peer) -> dict[str, Any]:
    return {name: getattr(peer, name) for name in Peer.__slots__ if name != "account"}


STEPS = st.lists(
    st.tuples(st.sampled_from(["start", "answer", "wait", "unwait"]), st.booleans()),
    max_size=200,
)


@settings(max_examples=200, deadline=None)
@given(steps=STEPS, congestion=st.booleans())
def test_the_inlined_start_and_answer_keep_the_peer_as_windows_does(
    steps: list[tuple[str, bool]], congestion: bool
) -> None:
    client = Endpoint(KeyAdapter(), seed=1, congestion=congestion)
    server = Endpoint(KeyAdapter(), seed=2)
    reference = Windows(enabled=congestion)
    mirror = reference.peer(A, 0.0)
    now = 0.0
    key = 0
    in_flight: list[Any] = []
    for step, with_policy in steps:
        now += 0.001
        peer = client.windows.peers.get(A)
        if step == "start":
            key += 1
            policy = RetryPolicy() if with_policy else None
            p = client.start_request((key, b""), A, None, now, 5.0, policy)
            reference.started(mirror)
            in_flight.append(p)
        elif step == "answer" and in_flight:
            p = in_flight.pop(0)
            frame = server.frame_oneway((p.key, b""), B)  # not a cached reply: a plain message
            assert client.receive(frame, A, now) is p
            reference.answered_call(mirror, p.sent_at, now)
        elif step == "wait":
            client.window_wait_begins(A)
            reference.wait_begins(A, now)
        elif step == "unwait" and mirror.waiting:
            client.window_wait_ends(A)
            reference.wait_ends(A)
        peer = client.windows.peers.get(A)
        if peer is not None:
            mine, theirs = state(peer), state(mirror)
            mine.pop("created")
            theirs.pop("created")
            assert mine == theirs
            assert (A in client.throttled) == (A in reference.throttled)


def test_the_answer_of_a_retransmitted_call_goes_through_windows_own_path() -> None:
    client, server = Endpoint(KeyAdapter(), seed=1, congestion=True), Endpoint(KeyAdapter())
    p = client.start_request((1, b""), A, None, 0.0, 5.0, RetryPolicy(initial_timeout=0.1))
    client.handle_timer(0.1)  # the peer's probe: sent again
    assert p.attempts == 2 and p.last_sent == 0.1
    client.receive(server.frame_oneway((1, b""), B), A, 0.15)
    peer = client.windows.peers[A]
    # (one probe, not persistent: the first copy is taken as answered)
    assert peer.in_flight == 0 and peer.answered == 0.0 and peer.heard == 0.15
