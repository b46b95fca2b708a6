"""One peer that stops reading holds up no other: a bounded send queue per destination."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import aiodisp
from aiodisp._transports import send_queues
from aiodisp._transports.sockets import UNIX_MAX, SocketTransport, make_unix_socket
from tests.helpers.adapters import KeyAdapter

pytestmark = pytest.mark.both_loops

BODY = b"x" * 200


class Sink:
    """Collects what a transport reports."""

    def __init__(self) -> None:
        self.datagrams: list[tuple[bytes, Any]] = []
        self.errors: list[Exception] = []

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.datagrams.append((data, addr))

    def error_received(self, exc: Exception) -> None:
        self.errors.append(exc)


@contextlib.contextmanager
def unix_peer(path: Path) -> Iterator[socket.socket]:
    """A plain bound Unix datagram socket (reading is up to the test)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.setblocking(False)
    try:
        yield sock
    finally:
        sock.close()


def transport(path: Path, **options: Any) -> SocketTransport:
    sock, fspath = make_unix_socket(path)
    t = SocketTransport(
        sock, reliable=True, max_datagram_size=UNIX_MAX, unlink_on_close=fspath, **options
    )
    t.start(Sink())
    return t


def fill(t: SocketTransport, addr: str) -> int:
    """Send to ``addr`` until send() says "blocked"; how many sends that took."""
    for n in range(1, 100_000):
        if t.send(BODY, addr):
            return n
    raise AssertionError("never blocked")


def drain(sock: socket.socket) -> list[bytes]:
    got = []
    with contextlib.suppress(BlockingIOError):
        while True:
            got.append(sock.recv(65536))
    return got


async def test_a_silent_peer_does_not_delay_sends_to_the_others(tmp_path: Path) -> None:
    t = transport(tmp_path / "t.sock", high_water=8, max_queued_per_peer=16)
    try:
        with unix_peer(tmp_path / "silent.sock") as silent, \
                unix_peer(tmp_path / "healthy.sock") as healthy:
            fill(t, silent.getsockname())
            assert t.queued_for(silent.getsockname()) == 8
            for i in range(50):
                assert t.send(b"%d" % i, healthy.getsockname()) is False  # not blocked
                assert drain(healthy) == [b"%d" % i]  # and out at once, not queued
            assert t.queued_for(healthy.getsockname()) == 0
            assert t.queued == 8
    finally:
        t.close()


async def test_a_destination_queue_is_bounded_and_refuses_past_it(tmp_path: Path) -> None:
    t = transport(tmp_path / "t.sock", high_water=8, max_queued_per_peer=16)
    try:
        with unix_peer(tmp_path / "silent.sock") as silent:
            addr = silent.getsockname()
            fill(t, addr)
            for _ in range(8):
                assert t.send(BODY, addr) is True  # still "blocked", queued up to the bound
            with pytest.raises(aiodisp.TransportError, match="queue is full") as info:
                t.send(BODY, addr)
            assert info.value.errno == errno.EAGAIN
            assert t.queued_for(addr) == 16
    finally:
        t.close()


async def test_best_effort_datagrams_are_dropped_past_the_high_water_mark(tmp_path: Path) -> None:
    t = transport(tmp_path / "t.sock", high_water=8, max_queued_per_peer=16)
    try:
        with unix_peer(tmp_path / "silent.sock") as silent, \
                unix_peer(tmp_path / "healthy.sock") as healthy:
            addr = silent.getsockname()
            fill(t, addr)
            assert t.send_best_effort(b"ack", addr) is False
            assert t.queued_for(addr) == 8
            assert t.send_queues.dropped == 1
            assert t.send_best_effort(b"ack", healthy.getsockname()) is True
            assert drain(healthy) == [b"ack"]
    finally:
        t.close()


async def test_wait_writable_waits_for_that_destination_only(tmp_path: Path) -> None:
    t = transport(tmp_path / "t.sock", high_water=8, max_queued_per_peer=16)
    try:
        with unix_peer(tmp_path / "slow.sock") as slow, \
                unix_peer(tmp_path / "healthy.sock") as healthy:
            addr = slow.getsockname()
            fill(t, addr)
            async with asyncio.timeout(1):
                await t.wait_writable(healthy.getsockname())  # at once
            waiting = asyncio.create_task(t.wait_writable(addr))
            whole = asyncio.create_task(t.wait_writable())
            await asyncio.sleep(0.05)
            assert not waiting.done() and not whole.done()
            got: list[bytes] = []
            async with asyncio.timeout(5):
                while not waiting.done():  # the peer reads again: the queue drains
                    got += drain(slow)
                    await asyncio.sleep(0.001)
                await whole
            got += drain(slow)
            await asyncio.sleep(0.1)
            got += drain(slow)
            assert len(got) >= 8 + t.send_queues.low_water
            assert t.send_queues.waiting() == 0
    finally:
        t.close()


async def test_timed_out_and_cancelled_waiters_leave_no_trace(tmp_path: Path) -> None:
    t = transport(tmp_path / "t.sock", high_water=8, max_queued_per_peer=16)
    try:
        with unix_peer(tmp_path / "silent.sock") as silent:
            addr = silent.getsockname()
            fill(t, addr)
            for _ in range(200):
                with pytest.raises(TimeoutError):
                    async with asyncio.timeout(0.001):
                        await t.wait_writable(addr)
                with pytest.raises(TimeoutError):
                    async with asyncio.timeout(0.001):
                        await t.wait_writable()
            task = asyncio.create_task(t.wait_writable(addr))
            await asyncio.sleep(0)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert t.send_queues.waiting() == 0
    finally:
        t.close()


async def test_close_wakes_waiters_and_drops_the_queues(tmp_path: Path) -> None:
    t = transport(tmp_path / "t.sock", high_water=8, max_queued_per_peer=16)
    with unix_peer(tmp_path / "silent.sock") as silent:
        fill(t, silent.getsockname())
        waiting = asyncio.create_task(t.wait_writable(silent.getsockname()))
        await asyncio.sleep(0.01)
        t.close()
        async with asyncio.timeout(1):
            await waiting
        assert t.queued == 0
        with pytest.raises(aiodisp.TransportError, match="closed"):
            t.send(b"x", silent.getsockname())


async def test_a_peer_that_goes_away_drops_its_queue_with_one_error(tmp_path: Path) -> None:
    t = transport(tmp_path / "t.sock", high_water=8, max_queued_per_peer=16)
    sink = Sink()
    t._sink = sink
    try:
        with unix_peer(tmp_path / "gone.sock") as gone:
            addr = gone.getsockname()
            fill(t, addr)
        (tmp_path / "gone.sock").unlink()
        async with asyncio.timeout(2):
            while t.queued:
                await asyncio.sleep(0.001)
        assert len(sink.errors) == 1 and "dropped 8 queued" in str(sink.errors[0])
    finally:
        t.close()


async def test_many_stuck_peers_share_one_coalesced_retry_timer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """200 peers that never read: retrying them costs a bounded number of syscalls."""
    t = transport(tmp_path / "t.sock", high_water=2, max_queued_per_peer=4)
    peers = []
    try:
        for i in range(200):
            cm = unix_peer(tmp_path / f"p{i}.sock")
            peers.append((cm, cm.__enter__()))
        for _, p in peers:
            fill(t, p.getsockname())
        queues = t.send_queues
        attempts = 0
        real = queues._sendto

        def counting(data: bytes, addr: Any) -> object:
            nonlocal attempts
            attempts += 1
            return real(data, addr)

        monkeypatch.setattr(queues, "_sendto", counting)
        start = time.perf_counter()
        await asyncio.sleep(0.5)
        elapsed = time.perf_counter() - start
        # each stuck queue is retried with doubling waits up to RETRY_MAX: over 0.5 s that
        # is about 7 + 0.5 / 0.05 = 17 tries, not one per 0.5 ms (1,000)
        per_peer = attempts / 200
        assert per_peer <= 7 + elapsed / send_queues.RETRY_MAX + 3, per_peer
        assert t.queued == 400
    finally:
        t.close()
        for cm, _ in peers:
            cm.__exit__(None, None, None)


# --------------------------------------------------------------------------- a dispatcher


async def test_a_silent_client_does_not_stop_a_unix_server_answering_the_others(
    tmp_path: Path,
) -> None:
    adapter = KeyAdapter()
    server = await aiodisp.open_unix(adapter, tmp_path / "s.sock")
    serving = asyncio.create_task(server.serve(lambda msg, addr: msg))
    try:
        with unix_peer(tmp_path / "silent.sock") as silent:
            # A client that sends thousands of requests and never reads the replies.
            for i in range(3000):
                datagram = struct.pack(">Q", 0x01 << 56 | i + 1) + adapter.msg_to_raw((i, BODY))
                try:
                    silent.sendto(datagram, server.local_addr)
                except BlockingIOError:
                    await asyncio.sleep(0.001)
            await asyncio.sleep(0.1)
            clients = [
                await aiodisp.open_unix(adapter, tmp_path / f"c{i}.sock") for i in range(5)
            ]
            try:
                replies = [
                    await c.request((10_000 + i, b"hi"), server.local_addr, timeout=2)
                    for i, c in enumerate(clients)
                ]
            finally:
                for c in clients:
                    await c.close()
            assert replies == [(10_000 + i, b"hi") for i in range(5)]
            queued: Any = server.transport
            assert queued.queued <= 1024  # bounded: max_queued_per_peer
    finally:
        await server.close()
        await serving
