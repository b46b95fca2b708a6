"""Every table is bounded by an option: the incoming queue, pending calls, the duplicate log.

Past ``max_queue`` the newest message is dropped, counted and not ACKed (so a
reliable sender retries); past ``max_pending`` a new call waits for room within
its own timeout; the delivery log never holds more than ``dedup_capacity``
entries nor keeps one past ``dedup_ttl``.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from typing import Any

import pytest

import aiodisp
from aiodisp._core.delivery_log import DeliveryLog
from aiodisp._core.endpoint import Endpoint
from aiodisp._core.framing import FLAG_ACK_REQUESTED, pack_header, unpack_header
from aiodisp._core.rtt import RttTable
from tests.helpers.adapters import KeyAdapter
from tests.helpers.flood import drain, recv_datagram
from tests.helpers.servers import echo_server

LOOP = "127.0.0.1"
FAST_RETRY = aiodisp.RetryPolicy(initial_timeout=0.02, backoff=1.5, max_interval=0.1,
                                 max_attempts=None)


def frame(key: int, payload: bytes = b"", *, packet_id: int, flags: int = 0) -> bytes:
    """An ACK-framed KeyAdapter datagram, as a hand-written peer sends it."""
    return pack_header(flags, packet_id) + struct.pack(">Q", key) + payload


def parse(datagram: bytes) -> tuple[int, int, int]:
    """``(flags, packet_id, key)`` of an ACK-framed KeyAdapter datagram."""
    flags, packet_id = unpack_header(datagram)
    return flags, packet_id, struct.unpack_from(">Q", datagram, 8)[0]


async def recv(sock: socket.socket, timeout: float = 5.0) -> bytes:
    return (await recv_datagram(sock, timeout))[0]


async def settle(condition: Any, timeout: float = 5.0) -> None:
    """Let the loop run until ``condition()`` holds (fails the test after ``timeout``)."""
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.005)


async def finish(*tasks: asyncio.Task[Any]) -> None:
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


# ---------------------------------------------------------------------- max_queue


async def test_full_queue_is_not_acked_so_reliable_notifies_retry_until_the_app_reads() -> None:
    adapter = KeyAdapter()
    receiver = await aiodisp.open_udp(adapter, ("127.0.0.1", 0), max_queue=4)
    # (no window: about the receiver's queue; a window would probe it one call at a time)
    sender = await aiodisp.open_udp(adapter, ("127.0.0.1", 0), congestion=False)
    async with receiver, sender:
        notifies = [
            asyncio.create_task(
                sender.notify((i, b"n"), receiver.local_addr, timeout=30, retry=FAST_RETRY)
            )
            for i in range(10)
        ]
        # The queue fills with 4; the 6 others are dropped on every retransmission.
        await settle(lambda: receiver.stats.queue_drops >= 30)
        assert receiver.queued == 4
        assert sum(t.done() for t in notifies) == 4  # only queued messages were ACKed
        assert sender.stats.acks_received == 4
        assert receiver.stats.acks_sent == 4
        assert receiver.stats.delivered == 4
        # The application reads slowly; every notify gets through, each exactly once.
        got: list[Any] = []
        while len(got) < 10:
            msg, _, _ = await receiver.recv_from(timeout=10)
            got.append(msg[0])
            await asyncio.sleep(0.01)
        await asyncio.gather(*notifies)
        assert sorted(got) == list(range(10))
        s = receiver.stats
        assert s.delivered == 10 and s.consumed == 10 and receiver.queued == 0
        assert s.queue_drops >= 30 and sender.stats.retransmissions >= s.queue_drops


async def test_queue_bound_holds_under_a_burst_of_distinct_messages(
    peer: socket.socket,
) -> None:
    d = await aiodisp.open_udp(KeyAdapter(), ("127.0.0.1", 0), max_queue=16)
    async with d:
        for i in range(500):
            peer.sendto(frame(i, b"x", packet_id=i), d.local_addr)
            if i % 50 == 49:
                await settle(lambda n=i + 1: d.stats.received == n)
        assert d.queued == 16
        s = d.stats
        assert (s.delivered, s.queue_drops) == (16, 484)
        assert [(await d.recv_from(timeout=1)).msg[0] for _ in range(16)] == list(range(16))


# ---------------------------------------------------------------------- max_pending


async def test_calls_past_max_pending_wait_and_go_out_as_room_frees(peer: socket.socket) -> None:
    d = await aiodisp.open_udp(KeyAdapter(), ("127.0.0.1", 0), max_pending=3, coalesce=False)
    addr = peer.getsockname()
    async with d:
        calls = [
            asyncio.create_task(d.request((i, b"q"), addr, timeout=30)) for i in range(8)
        ]
        sent = [parse(await recv(peer)) for _ in range(3)]
        await asyncio.sleep(0.2)
        assert drain(peer) == []  # the 5 others wait, unsent
        assert d.pending == 3 and d.stats.requests == 3
        answered = 0
        packet_id = 1000
        while answered < 8:
            _, _, key = sent.pop(0)
            peer.sendto(frame(key, b"r", packet_id=packet_id), d.local_addr)
            packet_id += 1
            answered += 1
            if answered <= 5:
                sent.append(parse(await recv(peer)))  # exactly one more goes out
            assert d.pending <= 3
        replies = await asyncio.gather(*calls)
        assert replies == [(i, b"r") for i in range(8)]
        assert d.stats.requests == 8 and d.stats.replies_matched == 8
        assert drain(peer) == []


async def test_call_waiting_for_room_times_out_and_leaves_nothing(peer: socket.socket) -> None:
    d = await aiodisp.open_udp(KeyAdapter(), ("127.0.0.1", 0), max_pending=1)
    addr = peer.getsockname()
    async with d:
        first = asyncio.create_task(d.notify((1, b""), addr, timeout=30))
        await recv(peer)
        with pytest.raises(aiodisp.RequestTimeout, match="room"):
            await d.request((2, b""), addr, timeout=0.2)
        assert d.pending == 1 and not d._room.waiting  # no waiter left behind
        assert all(parse(x)[2] == 1 for x in drain(peer))  # request 2 was never sent
        assert d.stats.requests == 0
        await finish(first)
        assert d.pending == 0
        # room again: a call goes straight out
        late = asyncio.create_task(d.request((3, b""), addr, timeout=5))
        assert parse(await recv(peer))[2] == 3
        peer.sendto(frame(3, packet_id=7), d.local_addr)
        assert await late == (3, b"")


async def test_a_thousand_callers_never_exceed_max_pending() -> None:
    a, b = await aiodisp.open_memory_pair(KeyAdapter(), max_pending=10)
    peak = 0

    async def serve() -> None:
        nonlocal peak
        async for msg, _, addr in b:
            peak = max(peak, a.pending)
            await b.notify_unreliable(msg, addr)

    serving = asyncio.create_task(serve())
    async with a, b:
        replies = await asyncio.gather(
            *(a.request((i, b""), b.local_addr, timeout=60) for i in range(1000))
        )
        assert [r[0] for r in replies] == list(range(1000))
    await serving
    assert 1 <= peak <= 10


async def test_time_spent_waiting_for_room_counts_against_the_call_timeout(
    peer: socket.socket,
) -> None:
    loop = asyncio.get_running_loop()
    d = await aiodisp.open_udp(KeyAdapter(), ("127.0.0.1", 0), max_pending=1)
    addr = peer.getsockname()
    async with d:
        first = asyncio.create_task(d.request((1, b""), addr, timeout=30))
        await recv(peer)
        started = loop.time()
        second = asyncio.create_task(d.request((2, b""), addr, timeout=1.0))
        await asyncio.sleep(0.6)
        await finish(first)  # room frees 0.6 s into the second call's 1.0 s
        await recv(peer)
        pending = d._core.waiting[2]
        try:
            # The call must end by its own deadline, not 1.0 s after it got room.
            assert pending.deadline <= started + 1.0 + 0.05
        finally:
            await finish(second)


async def test_room_given_to_a_cancelled_waiter_passes_to_the_next() -> None:
    a, b = await aiodisp.open_memory_pair(KeyAdapter(), max_pending=1)
    serving = asyncio.create_task(echo_server(b))
    async with a, b:
        blocker = asyncio.create_task(a.request((1, b""), ("memory", -1), timeout=30))
        await asyncio.sleep(0)
        woken = asyncio.create_task(a.request((2, b""), b.local_addr, timeout=30))
        starved = asyncio.create_task(a.request((3, b""), b.local_addr, timeout=1.0))
        for _ in range(3):
            await asyncio.sleep(0)
        assert a.pending == 1
        blocker.cancel()
        await asyncio.sleep(0)  # the blocker leaves and hands its room to `woken`...
        woken.cancel()  # ...which is cancelled before it runs
        try:
            assert await starved == (3, b"")
        finally:
            await finish(blocker, woken)
    await serving


class FailsOnKey(KeyAdapter):
    def msg_to_raw(self, msg: tuple[int, bytes]) -> bytes:
        if msg[0] == 666:
            raise ValueError("cannot encode 666")
        return super().msg_to_raw(msg)


async def test_room_given_to_a_call_that_fails_to_encode_passes_to_the_next() -> None:
    a, b = await aiodisp.open_memory_pair(FailsOnKey(), max_pending=1)
    serving = asyncio.create_task(echo_server(b))
    async with a, b:
        blocker = asyncio.create_task(a.request((1, b""), ("memory", -1), timeout=30))
        await asyncio.sleep(0)
        failing = asyncio.create_task(a.request((666, b""), b.local_addr, timeout=30))
        starved = asyncio.create_task(a.request((3, b""), b.local_addr, timeout=1.0))
        for _ in range(3):
            await asyncio.sleep(0)
        blocker.cancel()
        try:
            with pytest.raises(aiodisp.AdapterError):
                await failing
            assert await starved == (3, b"")
        finally:
            await finish(blocker, starved)
    await serving


async def test_finished_calls_do_not_accumulate_in_the_timer_heap() -> None:
    a, b = await aiodisp.open_memory_pair(KeyAdapter(), max_pending=10)
    serving = asyncio.create_task(echo_server(b))
    async with a, b:
        for i in range(5000):
            await a.request((i, b"x" * 100), b.local_addr, timeout=60)
        assert a.pending == 0
        assert a._core.heap_size <= 2 * 1024 + 2 * 10
    await serving


# ---------------------------------------------------------------------- delivery log


async def test_delivery_log_never_exceeds_dedup_capacity(peer: socket.socket) -> None:
    d = await aiodisp.open_udp(KeyAdapter(), ("127.0.0.1", 0), dedup_capacity=32)
    longest = 0

    async def app() -> None:
        nonlocal longest
        async for _ in d:
            longest = max(longest, len(d._core.log))

    reading = asyncio.create_task(app())
    async with d:
        for i in range(2000):
            peer.sendto(frame(i, b"x", packet_id=i, flags=FLAG_ACK_REQUESTED), d.local_addr)
            if i % 50 == 49:
                await settle(lambda n=i + 1: d.stats.received == n)
        await settle(lambda: d.stats.consumed == 2000)
        assert len(d._core.log) == 32 and longest <= 32
        assert d._core.log.replies_indexed <= 32
        # Past the capacity, "exactly once" is over: the oldest id is delivered again.
        peer.sendto(frame(0, b"x", packet_id=0, flags=FLAG_ACK_REQUESTED), d.local_addr)
        # ...while a recent one is still recognised as a copy.
        peer.sendto(frame(1999, b"x", packet_id=1999, flags=FLAG_ACK_REQUESTED), d.local_addr)
        await settle(lambda: d.stats.received == 2002)
        assert d.stats.delivered == 2001 and d.stats.duplicates == 1
    await reading


async def test_delivery_log_forgets_after_dedup_ttl(peer: socket.socket) -> None:
    d = await aiodisp.open_udp(KeyAdapter(), ("127.0.0.1", 0), dedup_ttl=0.2)
    async with d:
        copy = frame(5, b"x", packet_id=77, flags=FLAG_ACK_REQUESTED)
        peer.sendto(copy, d.local_addr)
        peer.sendto(copy, d.local_addr)
        await settle(lambda: d.stats.received == 2)
        assert (d.stats.delivered, d.stats.duplicates) == (1, 1)
        await asyncio.sleep(0.3)
        peer.sendto(frame(6, packet_id=78), d.local_addr)  # any delivery expires old entries
        await settle(lambda: d.stats.received == 3)
        assert len(d._core.log) == 1
        peer.sendto(copy, d.local_addr)  # too late to be known as a copy
        await settle(lambda: d.stats.received == 4)
        assert (d.stats.delivered, d.stats.duplicates) == (3, 1)


def test_delivery_log_stays_within_capacity_whatever_the_timing() -> None:
    log = DeliveryLog(ttl=5.0, capacity=100)
    now = 0.0
    for i in range(20_000):
        now += (i * 7919 % 13) / 100  # irregular arrivals
        log.record(("10.0.0.1", i % 300), i, i if i % 3 else None, now)
        assert len(log) <= 100
        assert log.replies_indexed <= len(log)


# ---------------------------------------------------------------------- other tables


def test_rtt_table_keeps_at_most_its_capacity_of_peers() -> None:
    table = RttTable(capacity=64)
    for port in range(5000):
        table.sample(("10.0.0.1", port), 0.01)
    assert len(table) == 64


def test_forged_replies_and_acks_create_no_state() -> None:
    """Nothing an unsolicited peer sends makes the endpoint's tables grow."""
    e: Endpoint[Any] = Endpoint(KeyAdapter(), max_queue=8,
                                dedup_capacity=16)
    evil = ("10.6.6.6", 666)
    for i in range(5000):
        e.receive(pack_header(2, i), evil, i * 1e-3)  # ACKs for ids never sent
        e.receive(b"\x00" * (i % 8), evil, i * 1e-3)  # truncated headers
        e.receive(frame(i, packet_id=i, flags=3), evil, i * 1e-3)  # bad flags
    assert e.pending_count == 0 and e.heap_size == 0
    assert len(e.log) == 0 and not e.inbox
    assert len(e.rtt) == 0


async def test_notify_and_request_share_the_max_pending_bound(peer: socket.socket) -> None:
    d = await aiodisp.open_udp(KeyAdapter(), ("127.0.0.1", 0), max_pending=2, coalesce=False)
    addr = peer.getsockname()
    async with d:
        n1 = asyncio.create_task(d.notify((1, b""), addr, timeout=30))
        r2 = asyncio.create_task(d.request((2, b""), addr, timeout=30))
        first = {key: packet_id for _, packet_id, key in [parse(await recv(peer)) for _ in "ab"]}
        assert set(first) == {1, 2}
        r3 = asyncio.create_task(d.request((3, b""), addr, timeout=30))
        await asyncio.sleep(0.1)
        assert d.pending == 2
        assert all(parse(x)[2] == 1 for x in drain(peer))  # the notify's retransmissions only
        # The peer ACKs the notify: its slot goes to request 3.
        peer.sendto(pack_header(2, first[1]), d.local_addr)
        await n1
        while parse(await recv(peer))[2] != 3:
            pass
        assert d.pending == 2 and d.stats.acks_received == 1
        await finish(r2, r3)


async def test_cached_replies_stay_within_reply_cache_bytes(peer: socket.socket) -> None:
    d = await aiodisp.open_udp(KeyAdapter(), ("127.0.0.1", 0), reply_cache_bytes=64 * 1024)
    answer = bytes(1000)

    async def serve() -> None:
        async for msg, _, addr in d:
            await d.notify_unreliable((msg[0], answer), addr)

    serving = asyncio.create_task(serve())
    async with d:
        for i in range(200):
            peer.sendto(frame(i, b"q", packet_id=i), d.local_addr)
            await recv(peer)  # the answer
        log = d._core.log
        assert 60 * 1024 < log.reply_bytes_used <= 64 * 1024
        # A retransmitted copy of a recent request gets its cached reply again...
        peer.sendto(frame(199, b"q", packet_id=199), d.local_addr)
        assert parse(await recv(peer))[2] == 199
        assert d.stats.replies_resent == 1
        # ...one whose reply was let go is still not delivered twice, but goes unanswered.
        peer.sendto(frame(0, b"q", packet_id=0), d.local_addr)
        await settle(lambda: d.stats.duplicates == 2)
        assert d.stats.replies_resent == 1 and d.stats.delivered == 200
        assert drain(peer) == []
    await serving
