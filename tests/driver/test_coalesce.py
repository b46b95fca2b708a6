"""``coalesce=True`` on real sockets and carriers: what one loop iteration sends to a
peer leaves as one datagram, each message in it still its own (docs/framing.md, "Bundles")."""

from __future__ import annotations

import asyncio
import collections
import socket
import struct
from typing import Any

import pytest

import aiodisp
from aiodisp._core.bundling import BUNDLE_LIMIT, FLAG_BUNDLE, Bundler, pack_bundle, split_bundle
from aiodisp._core.framing import (
    FLAG_ACK_REQUESTED,
    FLAG_REPLY,
    ack_for,
    pack_header,
    unpack_header,
)
from tests.helpers.adapters import FlagAdapter, KeyAdapter
from tests.helpers.carriers import ScriptedCarrier
from tests.helpers.flood import drain, recv_datagram, settle
from tests.helpers.servers import echo_server

pytestmark = pytest.mark.both_loops

LOOP = ("127.0.0.1", 0)


def frame(key: int, payload: bytes = b"", *, packet_id: int, flags: int = 0) -> bytes:
    """An ACK-framed KeyAdapter datagram, as a hand-written peer sends it."""
    return pack_header(flags, packet_id) + struct.pack(">Q", key) + payload


def parse(datagram: bytes) -> tuple[int, int, int, bytes]:
    """``(flags, packet_id, key, payload)`` of an ACK-framed KeyAdapter datagram."""
    flags, packet_id = unpack_header(datagram)
    return flags, packet_id, struct.unpack_from(">Q", datagram, 8)[0], datagram[16:]


def records(datagram: bytes) -> list[bytes]:
    """The datagrams a bundle carries (fails the test on a malformed one)."""
    assert datagram[0] == FLAG_BUNDLE, f"not a bundle: {datagram[:8].hex()}"
    out = split_bundle(datagram)
    assert isinstance(out, list), out
    return out


async def recv(sock: socket.socket) -> bytes:
    return (await recv_datagram(sock, 5.0))[0]


async def nothing_more(sock: socket.socket, wait: float = 0.05) -> list[bytes]:
    """What else arrives within ``wait`` seconds (the tests expect nothing)."""
    await asyncio.sleep(wait)
    return drain(sock)


# ---------------------------------------------------------------------- the wire


async def test_requests_made_in_one_iteration_travel_as_one_bundle_and_one_answers_them(
    peer: socket.socket,
) -> None:
    addr = peer.getsockname()
    async with await aiodisp.open_udp(KeyAdapter(), LOOP) as d:  # coalesce: the default
        calls = [asyncio.create_task(d.request((k, b"q%d" % k), addr, timeout=5))
                 for k in range(8)]
        data = await recv(peer)
        assert await nothing_more(peer) == []  # one datagram for the eight
        sent = [parse(r) for r in records(data)]
        assert [(flags, key, payload) for flags, _, key, payload in sent] == [
            (0, k, b"q%d" % k) for k in range(8)]
        ids = [packet_id for _, packet_id, _, _ in sent]
        assert len(set(ids)) == 8 and max(ids) - min(ids) > 1 << 20  # random, each its own
        assert d.stats.bundles_sent == 1 and d.stats.sent == 8 and d.stats.requests == 8

        replies = [frame(k, b"r%d" % k, packet_id=ids[k], flags=FLAG_REPLY) for k in range(8)]
        peer.sendto(pack_bundle(replies[::-1]), d.local_addr)
        assert await asyncio.gather(*calls) == [(k, b"r%d" % k) for k in range(8)]
        s = d.stats
        assert (s.bundles_received, s.received, s.replies_matched) == (1, 8, 8)


async def test_without_coalescing_each_request_is_its_own_datagram(
    peer: socket.socket,
) -> None:
    addr = peer.getsockname()
    async with await aiodisp.open_udp(KeyAdapter(), LOOP, coalesce=False) as d:
        calls = [asyncio.create_task(d.request((k, b"q"), addr, timeout=5)) for k in range(3)]
        got = [await recv(peer) for _ in range(3)]
        assert [parse(g)[:1] for g in got] == [(0,)] * 3 and d.stats.bundles_sent == 0
        for task in calls:
            task.cancel()
        await asyncio.gather(*calls, return_exceptions=True)


async def test_a_lone_request_travels_as_a_plain_datagram(peer: socket.socket) -> None:
    async with await aiodisp.open_udp(KeyAdapter(), LOOP) as d:
        call = asyncio.create_task(d.request((5, b"alone"), peer.getsockname(), timeout=5))
        data = await recv(peer)
        flags, packet_id, key, payload = parse(data)
        assert (flags, key, payload, len(data)) == (0, 5, b"alone", 8 + 8 + 5)
        peer.sendto(frame(5, b"ok", packet_id=packet_id, flags=FLAG_REPLY), d.local_addr)
        assert await call == (5, b"ok")
        assert d.stats.bundles_sent == 0 and d.stats.bundles_received == 0


async def test_a_bundle_of_messages_asking_acks_is_answered_with_one_bundle_of_acks(
    peer: socket.socket,
) -> None:
    ids = [0x1234_5678_9A00 + 977 * k for k in range(6)]
    async with await aiodisp.open_udp(KeyAdapter(), LOOP) as d:
        notes = [frame(k, b"n", packet_id=ids[k], flags=FLAG_ACK_REQUESTED) for k in range(6)]
        peer.sendto(pack_bundle(notes), d.local_addr)
        data = await recv(peer)
        assert records(data) == [ack_for(i) for i in ids]
        assert await nothing_more(peer) == []
        assert [(await d.recv_from(timeout=1)).msg for _ in range(6)] == [
            (k, b"n") for k in range(6)]
        s = d.stats
        assert (s.bundles_received, s.delivered, s.acks_sent, s.bundles_sent) == (1, 6, 6, 1)


async def test_a_message_larger_than_a_bundle_travels_alone_in_its_place(
    peer: socket.socket,
) -> None:
    addr = peer.getsockname()
    big = b"B" * (BUNDLE_LIMIT + 100)
    async with await aiodisp.open_udp(KeyAdapter(), LOOP) as d:
        for key, payload in [(1, b"a"), (2, big), (3, b"c"), (4, b"d")]:
            d.send_nowait((key, payload), addr)
        got = [await recv(peer) for _ in range(3)]
        assert await nothing_more(peer) == []
    assert parse(got[0])[2:] == (1, b"a")  # what was held for the peer left first, alone
    assert parse(got[1])[2:] == (2, big) and len(got[1]) == 16 + len(big)
    assert [parse(r)[2:] for r in records(got[2])] == [(3, b"c"), (4, b"d")]
    assert all(len(g) <= BUNDLE_LIMIT for g in (got[0], got[2]))


async def test_what_one_iteration_sends_fills_bundles_of_at_most_1200_bytes_in_order(
    peer: socket.socket,
) -> None:
    addr = peer.getsockname()
    async with await aiodisp.open_udp(KeyAdapter(), LOOP) as d:
        for key in range(100):
            d.send_nowait((key, b"x" * 40), addr)  # 56-byte datagrams, 58 in a record
        got = [await recv(peer) for _ in range(5)]
        assert await nothing_more(peer) == []
    assert [len(g) for g in got] == [1 + 20 * 58] * 5
    assert [parse(r)[2] for g in got for r in records(g)] == list(range(100))


async def test_close_sends_what_was_held(peer: socket.socket) -> None:
    d = await aiodisp.open_udp(KeyAdapter(), LOOP)
    for key in range(3):
        d.send_nowait((key, b"last words"), peer.getsockname())
    await d.close()  # in the same iteration: the flush has not run yet
    assert [parse(r)[2] for r in records(await recv(peer))] == [0, 1, 2]
    assert d.stats.bundles_sent == 1


async def test_coalescing_needs_ack_framing() -> None:
    with pytest.raises(ValueError, match="ACK framing"):
        await aiodisp.open_udp(KeyAdapter(), LOOP, framing="raw", coalesce=True)
    carrier = ScriptedCarrier()
    with pytest.raises(ValueError, match="ACK framing"):
        aiodisp.Dispatcher(carrier, KeyAdapter(), framing="raw", coalesce=True)
    async with aiodisp.Dispatcher(carrier, KeyAdapter(), framing="raw") as d:  # off by default
        d.send_nowait((1, b"a"), "peer")
        d.send_nowait((2, b"b"), "peer")
        assert carrier.sent == [(b"\x00" * 7 + b"\x01a", "peer"), (b"\x00" * 7 + b"\x02b", "peer")]


async def test_the_driver_bundles_exactly_as_the_bundler_does() -> None:
    """The driver's inlined copy of Bundler.add() against the original, on one sequence of
    sizes that fills, overflows and skips bundles to two peers."""
    carrier = ScriptedCarrier(max_datagram_size=4000)
    sizes = [10, 500, 600, 90, 1180, 3, 1300, 40, 40, 700, 520, 0, 1500, 8, 1100, 60]
    async with aiodisp.Dispatcher(carrier, KeyAdapter()) as d:
        for n, size in enumerate(sizes):
            d.send_nowait((n, b"y" * size), ("p", "q")[n % 3 == 0])
        await asyncio.sleep(0.01)
    for dest in ("p", "q"):
        sent = [data for data, a in carrier.sent if a == dest]
        frames = [f for data in sent for f in (records(data) if data[0] == FLAG_BUNDLE
                                                else [data])]
        assert [parse(f)[3] for f in frames] == [
            b"y" * s for n, s in enumerate(sizes) if ("p", "q")[n % 3 == 0] == dest]
        bundler = Bundler()
        for f in frames:
            bundler.add(f, dest)
        assert [datagram for datagram, _, _ in bundler.drain()] == sent


# ---------------------------------------------------------------------- loss and duplication


async def test_every_request_and_notify_completes_and_is_served_once_over_a_lossy_link() -> None:
    link = aiodisp.Link(loss=0.15, duplicate=0.2, reorder=0.1, delay=0.002, seed=11)
    client, server = await aiodisp.open_memory_pair(
        FlagAdapter(), link=link, timeout=30, congestion=False, retry_budget=None,
        retry=aiodisp.RetryPolicy(initial_timeout=0.05, max_attempts=None, max_interval=0.3),
    )
    runs: collections.Counter[int] = collections.Counter()

    def handler(msg: Any, _addr: Any) -> Any:
        runs[msg[0]] += 1
        return (msg[0], b"r%d" % msg[0], True) if msg[0] < 1000 else None

    async with client, server:
        serving = asyncio.create_task(server.serve(handler))
        replies = await asyncio.gather(
            *(client.request((k, b"q", False), server.local_addr) for k in range(300)),
            *(client.notify((1000 + k, b"n", False), server.local_addr) for k in range(300)),
        )
        await asyncio.sleep(0.1)  # late copies still in flight must not run a handler again
        assert replies[:300] == [(k, b"r%d" % k, True) for k in range(300)]
        assert runs == collections.Counter(list(range(300)) + list(range(1000, 1300)))
        net = client.transport.counters  # type: ignore[attr-defined]  # the memory link's
        assert net.lost > 0 and net.duplicated > 0
        assert client.stats.bundles_sent > 0 and server.stats.bundles_received > 0
        assert server.stats.bundles_sent > 0 and client.stats.bundles_received > 0
        assert server.stats.duplicates > 0 and client.pending == 0
    await serving


# ---------------------------------------------------------------------- the send queue


async def test_a_blocked_bundle_makes_the_next_send_to_its_peer_wait_for_room() -> None:
    carrier = ScriptedCarrier()
    async with aiodisp.Dispatcher(carrier, KeyAdapter()) as d:
        carrier.mode = "blocked"
        await d.notify_unreliable((1, b"first"), "peer")  # held: returns at once
        await asyncio.sleep(0.005)  # its bundle leaves, and finds the queue past high water
        assert [parse(data)[2] for data, _ in carrier.sent] == [1]
        second = asyncio.create_task(d.notify_unreliable((2, b"second"), "peer"))
        await asyncio.sleep(0.02)
        assert not second.done()  # waits for room
        with pytest.raises(aiodisp.RequestTimeout) as info:
            await d.request((3, b"q"), "peer", timeout=0.05)
        assert info.value.waited_for == "send room"
        carrier.drain()
        await asyncio.wait_for(second, 1)
        assert [parse(data)[2] for data, _ in carrier.sent] == [1, 2, 3]


async def test_a_failed_bundle_fails_the_calls_it_carried_and_counts_one_way_sends() -> None:
    carrier = ScriptedCarrier()
    async with aiodisp.Dispatcher(carrier, KeyAdapter()) as d:
        carrier.mode = "fail"
        calls = [asyncio.create_task(d.request((k, b"q"), "peer", timeout=5)) for k in range(3)]
        results = await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), 1)
        assert all(isinstance(r, aiodisp.TransportError) for r in results)
        assert d.pending == 0 and d.stats.requests == 0  # never sent: never made
        await d.notify_unreliable((9, b"one way"), "peer")  # does not raise: held
        await asyncio.sleep(0.005)
        assert d.stats.transport_errors == 2  # the calls' bundle and the one-way one
        carrier.mode = "ok"
        call = asyncio.create_task(d.request((1, b"again"), "peer", timeout=5))
        await settle(lambda: len(carrier.sent) == 1)
        _, packet_id, _, _ = parse(carrier.sent[0][0])
        assert carrier.sink is not None
        carrier.sink.datagram_received(frame(1, b"r", packet_id=packet_id, flags=FLAG_REPLY),
                                       "peer")
        assert await call == (1, b"r")


async def test_a_transient_failure_is_a_loss_the_retry_policy_repairs() -> None:
    carrier = ScriptedCarrier()
    policy = aiodisp.RetryPolicy(initial_timeout=0.02, jitter=0.0, max_attempts=None)
    async with aiodisp.Dispatcher(carrier, KeyAdapter()) as d:
        carrier.mode = "transient"
        call = asyncio.create_task(d.request((1, b"q"), "peer", timeout=5, retry=policy))
        await settle(lambda: d.stats.transport_errors >= 1)
        assert not call.done() and d.pending == 1
        carrier.mode = "ok"
        await settle(lambda: len(carrier.sent) >= 1)  # the retransmission
        _, packet_id, key, _ = parse(carrier.sent[0][0])
        assert key == 1 and carrier.sink is not None
        carrier.sink.datagram_received(frame(1, b"r", packet_id=packet_id, flags=FLAG_REPLY),
                                       "peer")
        assert await call == (1, b"r")


# ---------------------------------------------------------------------- bursts


async def test_a_burst_of_2000_requests_to_a_small_queue_completes() -> None:
    server = await aiodisp.open_udp(KeyAdapter(), LOOP, max_queue=64)
    client = await aiodisp.open_udp(KeyAdapter(), LOOP, congestion=False, retry_budget=None)
    serving = asyncio.create_task(echo_server(server))
    async with client, server:
        replies = await asyncio.gather(
            *(client.request((k, b"burst"), server.local_addr, timeout=20) for k in range(2000))
        )
        assert replies == [(k, b"burst") for k in range(2000)]
        assert server.stats.bundles_received >= 2000 // 60 and client.stats.bundles_sent > 0
    await serving


async def test_a_read_batch_of_bundles_yields_to_the_readers_before_the_queue_overflows(
    request: pytest.FixtureRequest,
) -> None:
    """2,000 requests in one iteration reach the server as ~40 bundles of ~52 messages,
    read in one batch of the socket; the queue holds 64. The batch must end once the
    queue is half full so the reader takes them: sent once each, none may be dropped.
    (SocketTransport stops its batch; uvloop's transport cannot, so the dispatcher
    holds the rest of the batch until the reader has run.)"""
    once = aiodisp.RetryPolicy(initial_timeout=3.0, max_attempts=1)
    server = await aiodisp.open_udp(KeyAdapter(), LOOP, max_queue=64)
    client = await aiodisp.open_udp(KeyAdapter(), LOOP, congestion=False, retry_budget=None)
    serving = asyncio.create_task(echo_server(server))
    async with client, server:
        # (the server's first reply resolves the client's address, a task of its own:
        # meanwhile its reader waits for nothing but that, and cannot keep up)
        await client.request((10_000, b"warm up"), server.local_addr, timeout=5)
        replies = await asyncio.gather(
            *(client.request((k, b"burst"), server.local_addr, timeout=5, retry=once)
              for k in range(2000)),
            return_exceptions=True,
        )
        s = server.stats
        assert (s.queue_drops, client.stats.retransmissions) == (0, 0)
        assert s.bundles_received >= 2000 // 60
        assert replies == [(k, b"burst") for k in range(2000)]
    await serving
