"""Packet ids nobody can predict, de-duplication that stays sound when random ids repeat,
and replies that name the datagram they answer (so a copy of an old reply completes no
later call with the same key)."""

from __future__ import annotations

import itertools
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from aiodisp._core.endpoint import Endpoint
from aiodisp._core.framing import FLAG_REPLY, pack_header, unpack_header
from aiodisp._core.packet_ids import BATCH, PacketIds
from tests.helpers.adapters import FlagAdapter, KeyAdapter

A = ("10.0.0.1", 1000)
B = ("10.0.0.2", 2000)


def endpoint(adapter: Any = None, **kw: Any) -> Endpoint[Any]:
    return Endpoint(adapter or KeyAdapter(), **kw)


def ids_to(e: Endpoint[Any], peer: Any, start: int, count: int) -> list[int]:
    return [e.start_request((start + i, b""), peer, None, 0.0, 1.0, None).packet_id
            for i in range(count)]


def test_ids_seen_by_one_peer_say_nothing_of_another_peers_or_of_the_next() -> None:
    e = endpoint(seed=5)  # (repeatable; unseeded ids come from the OS's generator)
    seen_by_a, sent_to_b = [], []
    for i in range(200):
        seen_by_a += ids_to(e, A, 2 * i * 10, 5)
        sent_to_b += ids_to(e, B, (2 * i + 1) * 10, 5)
    # A counter would make every id within a few thousand of the last one A saw.
    for b in sent_to_b:
        assert min(abs(b - a) for a in seen_by_a) > 1 << 20
    steps = {later - earlier for earlier, later in itertools.pairwise(seen_by_a)}
    assert len(steps) == len(seen_by_a) - 1  # no two steps alike: no stride to follow
    assert all(0 <= i < 1 << 56 for i in seen_by_a + sent_to_b)


def test_unseeded_endpoints_draw_different_ids_and_a_seed_repeats_them() -> None:
    assert ids_to(endpoint(), A, 0, 50) != ids_to(endpoint(), A, 0, 50)
    assert ids_to(endpoint(seed=9), A, 0, 50) == ids_to(endpoint(seed=9), A, 0, 50)
    supply = PacketIds()
    assert len({supply.draw() for _ in range(3 * BATCH)}) == 3 * BATCH


def framed(packet_id: int, key: int, payload: bytes = b"", flags: int = 1) -> bytes:
    return pack_header(flags, packet_id) + KeyAdapter().msg_to_raw((key, payload))


def test_a_new_message_that_reuses_a_delivered_id_is_delivered() -> None:
    """Random ids may repeat within the dedup window; the key tells a copy from a new one."""
    server = endpoint()
    server.receive(framed(42, 1), A, 0.0)
    server.receive(framed(42, 2), A, 0.1)  # another message, same id by chance
    server.receive(framed(42, 2), A, 0.2)  # a retransmitted copy of that one
    assert [r.msg[0] for r in server.inbox] == [1, 2]
    assert server.counters.duplicates == 1 and server.counters.delivered == 2


def test_a_reused_id_takes_the_old_deliverys_reply_with_it() -> None:
    server = endpoint()
    server.receive(framed(42, 1), A, 0.0)
    server.frame_oneway((1, b"answer"), A)
    server.receive(framed(42, 2), A, 0.1)  # new message, same id
    server.outbox.clear()
    server.receive(framed(42, 2), A, 0.2)  # its copy: ACKed again, not given reply 1
    assert [unpack_header(d)[0] for d, _ in server.outbox] == [2]


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 3)), min_size=1, max_size=40))
def test_every_message_is_delivered_once_whatever_ids_repeat(
    sends: list[tuple[int, int]],
) -> None:
    """(id, key) pairs from one sender: each distinct message once, copies never again."""
    server = endpoint()
    for n, (packet_id, key) in enumerate(sends):
        server.receive(framed(packet_id, key), A, n * 0.01)
    delivered = [r.msg[0] for r in server.inbox]
    # A datagram is a copy exactly when the last message delivered with its id had its
    # key; otherwise it is new (another message that drew the same id), and delivered.
    last: dict[int, int] = {}
    expected = []
    for packet_id, key in sends:
        if last.get(packet_id) != key:
            expected.append(key)
            last[packet_id] = key
    assert delivered == expected


def test_a_reply_names_the_request_it_answers() -> None:
    client, server = endpoint(FlagAdapter()), endpoint(FlagAdapter())
    p = client.start_request((7, b"q", False), B, None, 0.0, 1.0, None)
    assert p.frame is not None
    server.receive(p.frame, A, 0.0)
    reply = server.frame_oneway((7, b"r", True), A)
    assert unpack_header(reply) == (FLAG_REPLY, p.packet_id)
    assert client.receive(reply, B, 0.1) is p and p.result == (7, b"r", True)


def test_a_copy_of_an_old_reply_completes_no_later_request_with_its_key() -> None:
    client, server = endpoint(FlagAdapter()), endpoint(FlagAdapter())
    first = client.start_request((7, b"q1", False), B, None, 0.0, 1.0, None)
    assert first.frame is not None
    server.receive(first.frame, A, 0.0)
    old_reply = server.frame_oneway((7, b"r1", True), A)
    assert client.receive(old_reply, B, 0.1) is first
    second = client.start_request((7, b"q2", False), B, None, 0.2, 1.0, None)
    assert second.frame is not None
    assert client.receive(old_reply, B, 0.3) is None  # the network's copy of reply 1
    assert client.counters.unknown_replies == 1 and not second.done
    server.receive(second.frame, A, 0.3)
    assert client.receive(server.frame_oneway((7, b"r2", True), A), B, 0.4) is second
    assert second.result == (7, b"r2", True)


def test_a_reply_to_a_request_the_server_no_longer_remembers_still_matches_by_key() -> None:
    """The fallback: with no delivery to name, a reply is framed as a plain message."""
    client = endpoint(FlagAdapter())
    p = client.start_request((7, b"q", False), B, None, 0.0, 1.0, None)
    forgetful = endpoint(FlagAdapter())
    reply = forgetful.frame_oneway((7, b"r", True), A)
    assert unpack_header(reply)[0] == 0
    assert client.receive(reply, B, 0.1) is p
