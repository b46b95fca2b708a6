"""The Dispatcher over real sockets: the contract of DESIGN.md, one behaviour a test."""

from __future__ import annotations

import asyncio
import os
import socket
import struct
from pathlib import Path
from typing import Any

import pytest

import aiodisp
from aiodisp._transports.memory import MemoryNetwork
from tests.helpers.adapters import FlagAdapter, KeyAdapter
from tests.helpers.servers import echo_server, silent_udp

pytestmark = pytest.mark.both_loops


def has_ipv6() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


async def test_request_gets_the_reply_with_its_key(udp_pair: Any) -> None:
    client, server = udp_pair
    assert await client.request((1, b"hello"), server.local_addr, timeout=2) == (1, b"hello")
    assert client.stats.replies_matched == 1 and client.pending == 0


@pytest.mark.skipif(not has_ipv6(), reason="this machine has no IPv6 loopback")
async def test_request_over_ipv6_and_received_addr_is_the_socket_4_tuple() -> None:
    adapter = KeyAdapter()
    server = await aiodisp.open_udp(adapter, local_addr=("::1", 0))
    client = await aiodisp.open_udp(adapter, local_addr=("::1", 0))
    async with client, server:
        assert len(server.local_addr) == 4
        request = asyncio.create_task(client.request((5, b"v6"), server.local_addr[:2], timeout=2))
        received = await server.recv_from(timeout=2)
        assert received.addr == client.local_addr
        await server.notify_unreliable(received.msg, received.addr)
        assert await request == (5, b"v6")


async def test_hostname_addresses_are_resolved(udp_pair: Any) -> None:
    client, server = udp_pair
    port = server.local_addr[1]
    assert await client.request((2, b"x"), ("localhost", port), timeout=2) == (2, b"x")


async def test_request_over_unix_datagram_sockets(tmp_path: Path) -> None:
    adapter = KeyAdapter()
    server = await aiodisp.open_unix(adapter, tmp_path / "server.sock")
    client = await aiodisp.open_unix(adapter, tmp_path / "client.sock")
    task = asyncio.create_task(echo_server(server))
    try:
        assert server.local_addr == str(tmp_path / "server.sock")
        assert await client.request((3, b"unix"), server.local_addr, timeout=2) == (3, b"unix")
        await client.notify((4, b"n"), server.local_addr)  # ACKed by the peer's dispatcher
    finally:
        await client.close()
        await server.close()
        await task
    assert not (tmp_path / "server.sock").exists() and not (tmp_path / "client.sock").exists()


async def test_unix_stale_socket_file_is_replaced_but_a_live_one_is_refused(
    tmp_path: Path,
) -> None:
    path = tmp_path / "s.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    stale.bind(str(path))
    stale.close()  # the file stays behind, nobody listens
    d = await aiodisp.open_unix(KeyAdapter(), path)
    try:
        with pytest.raises(aiodisp.TransportError, match="in use"):
            await aiodisp.open_unix(KeyAdapter(), path)
    finally:
        await d.close()


async def test_unix_sender_waits_for_room_instead_of_dropping(tmp_path: Path) -> None:
    adapter = KeyAdapter()
    server = await aiodisp.open_unix(adapter, tmp_path / "s.sock", max_queue=100_000)
    client = await aiodisp.open_unix(adapter, tmp_path / "c.sock")
    async with client, server:
        # Stop the server reading so the kernel queue fills and sendto() hits EAGAIN.
        loop = asyncio.get_running_loop()
        transport: Any = server.transport  # a SocketTransport
        fd = transport.socket.fileno()
        loop.remove_reader(fd)
        body = b"x" * 2000
        count = 2000
        sending = asyncio.create_task(_send_many(client, server.local_addr, body, count))
        await asyncio.sleep(0.3)
        assert not sending.done()  # blocked by the full peer, not dropping
        assert client.transport.queued > 0  # type: ignore[attr-defined]
        loop.add_reader(fd, transport._read_ready)
        await asyncio.wait_for(sending, 20)
        got = [(await server.recv_from(timeout=5)).msg[0] for _ in range(count)]
        assert got == list(range(count))
        assert client.stats.transport_errors == 0 and server.stats.queue_drops == 0


async def _send_many(d: Any, addr: Any, body: bytes, count: int) -> None:
    for i in range(count):
        await d.notify_unreliable((i, body), addr)


async def test_reply_with_another_key_ends_in_request_timeout() -> None:
    adapter = KeyAdapter()
    server = await aiodisp.open_udp(adapter, ("127.0.0.1", 0))
    client = await aiodisp.open_udp(adapter, ("127.0.0.1", 0))
    async with client, server:

        async def wrong_key() -> None:
            msg, _, addr = await server.recv_from(timeout=2)
            await server.notify_unreliable((msg[0] + 1, msg[1]), addr)

        task = asyncio.create_task(wrong_key())
        with pytest.raises(aiodisp.RequestTimeout) as info:
            await client.request((10, b""), server.local_addr, timeout=0.3)
        await task
        assert isinstance(info.value, TimeoutError)
        # (retransmitted by default over ACK framing: the reply with the wrong key did
        # not complete the request)
        assert info.value.key == 10 and info.value.attempts >= 1
        assert "10" in str(info.value)
        assert client.pending == 0 and client.stats.timeouts == 1
        # the stray message is an ordinary message for the client's application
        assert (await client.recv_from(timeout=1)).msg == (11, b"")


async def test_no_reply_ends_in_request_timeout_after_the_retry_policy() -> None:
    adapter = KeyAdapter()
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))
    try:
        async with await aiodisp.open_udp(adapter, ("127.0.0.1", 0)) as client:
            policy = aiodisp.RetryPolicy(initial_timeout=0.02, max_attempts=3, jitter=0)
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            with pytest.raises(aiodisp.RequestTimeout) as info:
                await client.request((1, b""), silent.getsockname(), timeout=5, retry=policy)
            assert info.value.attempts == 3
            assert loop.time() - t0 < 2  # the policy, not the 5 s timeout, ended it
            assert client.stats.retransmissions == 2
    finally:
        silent.close()


async def test_two_pending_requests_may_not_share_a_key(udp_pair: Any) -> None:
    client, _ = udp_pair
    with silent_udp() as silent:
        first = asyncio.create_task(client.request((1, b""), silent, timeout=1))
        await asyncio.sleep(0)
        with pytest.raises(aiodisp.DuplicateKeyError):
            await client.request((1, b""), silent, timeout=1)
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first


async def test_cancelling_a_request_removes_its_pending_entry() -> None:
    # (congestion=False: all 100 in flight at once, none waiting for the window)
    with silent_udp() as silent:
        async with await aiodisp.open_udp(
            KeyAdapter(), ("127.0.0.1", 0), congestion=False
        ) as client:
            tasks = [
                asyncio.create_task(client.request((i, b""), silent, timeout=10))
                for i in range(100)
            ]
            for _ in range(1000):  # (each task's first step registers its call)
                if client.pending == 100:
                    break
                await asyncio.sleep(0.001)
            assert client.pending == 100
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            assert client.pending == 0 and client.stats.cancelled == 100
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.05):
                    await client.request((1, b""), silent, timeout=10)
            assert client.pending == 0


async def test_notify_unreliable_returns_at_once(udp_pair: Any) -> None:
    client, _ = udp_pair
    await client.notify_unreliable((9, b"fire"), ("127.0.0.1", 9))
    assert client.stats.notifies == 1 and client.pending == 0


async def test_notify_over_udp_waits_for_the_peers_ack() -> None:
    adapter = KeyAdapter()
    server = await aiodisp.open_udp(adapter, ("127.0.0.1", 0))
    client = await aiodisp.open_udp(adapter, ("127.0.0.1", 0))
    async with client, server:
        await client.notify((1, b"n"), server.local_addr, timeout=2)
        assert client.stats.acks_received == 1 and server.stats.acks_sent == 1
        assert (await server.recv_from(timeout=1)).msg == (1, b"n")


async def test_notify_to_a_silent_udp_port_times_out() -> None:
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))
    try:
        async with await aiodisp.open_udp(KeyAdapter(), ("127.0.0.1", 0)) as client:
            with pytest.raises(aiodisp.RequestTimeout) as info:
                await client.notify((1, b"n"), silent.getsockname(), timeout=0.3)
            assert info.value.attempts >= 2  # the adaptive default retransmitted
    finally:
        silent.close()


async def test_notify_over_raw_udp_raises_reliability_unavailable() -> None:
    async with await aiodisp.open_udp(KeyAdapter(), ("127.0.0.1", 0), framing="raw") as d:
        with pytest.raises(aiodisp.ReliabilityUnavailable):
            await d.notify((1, b""), ("127.0.0.1", 9))


async def test_recv_from_returns_message_size_and_sender() -> None:
    adapter = KeyAdapter()
    a = await aiodisp.open_udp(adapter, ("127.0.0.1", 0))
    b = await aiodisp.open_udp(adapter, ("127.0.0.1", 0))
    async with a, b:
        await a.notify_unreliable((3, b"abc"), b.local_addr)
        received = await b.recv_from(timeout=2)
        assert isinstance(received, aiodisp.Received)
        assert received.msg == (3, b"abc")
        assert received.size == 11  # the adapter's bytes, without the framing header
        assert received.addr == a.local_addr
        with pytest.raises(aiodisp.RequestTimeout):
            await b.recv_from(timeout=0.05)


async def test_iteration_yields_messages_until_closed() -> None:
    a, b = await aiodisp.open_memory_pair(KeyAdapter())
    got: list[int] = []

    async def reader() -> None:
        async for msg, _size, _addr in b:
            got.append(msg[0])

    task = asyncio.create_task(reader())
    for i in range(5):
        await a.notify((i, b""), b.local_addr)
    while len(got) < 5:
        await asyncio.sleep(0.01)
    await b.close()
    await asyncio.wait_for(task, 1)
    await a.close()
    assert got == [0, 1, 2, 3, 4]


async def test_is_reply_drops_unknown_replies_and_delivers_peer_requests() -> None:
    adapter = FlagAdapter()
    a = await aiodisp.open_udp(adapter, ("127.0.0.1", 0))
    b = await aiodisp.open_udp(adapter, ("127.0.0.1", 0))
    async with a, b:
        pending = asyncio.create_task(a.request((7, b"ours", False), b.local_addr, timeout=2))
        their_request = await b.recv_from(timeout=1)
        # b sends its own request that happens to use key 7, then a late reply for key 99
        await b.notify_unreliable((7, b"theirs", False), a.local_addr)
        await b.notify_unreliable((99, b"late", True), a.local_addr)
        got = await a.recv_from(timeout=1)
        assert got.msg == (7, b"theirs", False)
        assert not pending.done()
        await b.notify_unreliable((7, b"answer", True), their_request.addr)
        assert await pending == (7, b"answer", True)
        await asyncio.sleep(0.05)
        assert a.stats.unknown_replies == 1 and a.queued == 0


async def test_full_queue_drops_the_newest_and_counts_it() -> None:
    a, b = await aiodisp.open_memory_pair(KeyAdapter(), max_queue=3)
    async with a, b:
        for i in range(5):
            await a.notify_unreliable((i, b""), b.local_addr)
        await asyncio.sleep(0.01)
        assert b.queued == 3 and b.stats.queue_drops == 2
        assert [(await b.recv_from()).msg[0] for _ in range(3)] == [0, 1, 2]


async def test_replies_keep_flowing_while_the_queue_is_full() -> None:
    a, b = await aiodisp.open_memory_pair(FlagAdapter(), max_queue=1)
    async with a, b:
        for i in range(3):
            await b.notify_unreliable((100 + i, b"", False), a.local_addr)
        await asyncio.sleep(0.01)
        assert a.queued == 1
        request = asyncio.create_task(a.request((1, b"", False), b.local_addr, timeout=2))
        _, _, addr = await b.recv_from(timeout=1)
        await b.notify_unreliable((1, b"r", True), addr)
        assert await request == (1, b"r", True)


async def test_close_is_idempotent_and_fails_waiting_and_later_calls() -> None:
    adapter = KeyAdapter()
    d = await aiodisp.open_udp(adapter, ("127.0.0.1", 0))
    with silent_udp() as silent:
        waiting_request = asyncio.create_task(d.request((1, b""), silent, timeout=10))
        waiting_recv = asyncio.create_task(d.recv_from(timeout=10))
        await asyncio.sleep(0.01)
        await d.close()
        await d.close()
    with pytest.raises(aiodisp.DispatcherClosed):
        await waiting_request
    with pytest.raises(aiodisp.DispatcherClosed):
        await waiting_recv
    for call in (
        d.request((2, b""), ("127.0.0.1", 9)),
        d.notify((2, b""), ("127.0.0.1", 9)),
        d.notify_unreliable((2, b""), ("127.0.0.1", 9)),
        d.recv_from(),
    ):
        with pytest.raises(aiodisp.DispatcherClosed):
            await call
    assert d.closed and d.pending == 0


async def test_close_discards_queued_messages_and_counts_them() -> None:
    a, b = await aiodisp.open_memory_pair(KeyAdapter())
    await a.notify((1, b""), b.local_addr)
    await a.notify((2, b""), b.local_addr)
    await asyncio.sleep(0)
    await b.close()
    await a.close()
    assert b.stats.discarded_on_close == 2
    with pytest.raises(aiodisp.DispatcherClosed):
        await b.recv_from()


async def test_garbage_never_stops_the_receiver(udp_pair: Any) -> None:
    client, server = udp_pair
    raw = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for junk in (b"", b"\x01", b"\xff" * 8, b"\x80" + os.urandom(100)):
            raw.sendto(junk, server.local_addr)
        raw.sendto(struct.pack(">Q", 5) + b"\x00" * 3, server.local_addr)  # 3-byte key: undecodable
    finally:
        raw.close()
    assert await client.request((1, b"still here"), server.local_addr, timeout=2) == (
        1, b"still here")
    s = server.stats
    assert s.empty == 1 and s.header_errors == 3 and s.decode_errors == 1


async def test_adapter_error_on_send_chains_the_cause(udp_pair: Any) -> None:
    client, server = udp_pair
    with pytest.raises(aiodisp.AdapterError) as info:
        await client.request(("not", "a key"), server.local_addr)
    assert info.value.__cause__ is not None
    assert client.pending == 0


async def test_message_too_large_is_raised_before_sending(udp_pair: Any) -> None:
    client, server = udp_pair
    with pytest.raises(aiodisp.MessageTooLarge):
        await client.request((1, b"x" * 70_000), server.local_addr)
    with pytest.raises(aiodisp.MessageTooLarge):
        await client.notify_unreliable((1, b"x" * 70_000), server.local_addr)
    assert client.stats.sent == 0


async def test_bad_addresses_raise_transport_error(udp_pair: Any) -> None:
    client, _ = udp_pair
    for addr in (("no-such-host.invalid", 1), ("127.0.0.1",), "127.0.0.1:9", ("::1", 1)):
        with pytest.raises(aiodisp.TransportError):
            await client.request((1, b""), addr, timeout=0.5)
    assert client.pending == 0


async def test_thousands_of_concurrent_requests(udp_pair: Any) -> None:
    client, server = udp_pair
    policy = aiodisp.RetryPolicy(initial_timeout=0.5)
    replies = await asyncio.gather(
        *(client.request((i, b"%d" % i), server.local_addr, timeout=20, retry=policy)
          for i in range(5000))
    )
    assert replies == [(i, b"%d" % i) for i in range(5000)]
    assert client.pending == 0


async def test_stats_is_a_frozen_snapshot(udp_pair: Any) -> None:
    client, server = udp_pair
    before = client.stats
    await client.request((1, b""), server.local_addr, timeout=2)
    assert before.requests == 0 and client.stats.requests == 1
    with pytest.raises(AttributeError):
        before.requests = 5  # type: ignore[misc, unused-ignore]
    assert client.stats.as_dict()["replies_matched"] == 1


async def test_any_transport_can_carry_a_dispatcher() -> None:
    network = MemoryNetwork()
    ta, tb = network.transport(), network.transport()
    assert isinstance(ta, aiodisp.DatagramTransport)
    a = aiodisp.Dispatcher(ta, KeyAdapter())
    b = aiodisp.Dispatcher(tb, KeyAdapter())
    task = asyncio.create_task(echo_server(b))
    async with a, b:
        assert await a.request((1, b"x"), b.local_addr, timeout=1) == (1, b"x")
    await task


def test_adapter_without_required_methods_is_refused() -> None:
    async def main() -> None:
        with pytest.raises(TypeError, match="msg_key"):
            await aiodisp.open_memory_pair(object())  # type: ignore[arg-type]

    asyncio.run(main())


async def test_buffer_size_sets_the_kernel_socket_buffers() -> None:
    # (open_udp asks for 4 MiB by default; None leaves the kernel's default)
    default = await aiodisp.open_udp(KeyAdapter(), ("127.0.0.1", 0), buffer_size=None)
    big = await aiodisp.open_udp(KeyAdapter(), ("127.0.0.1", 0), buffer_size=1 << 20)
    async with default, big:
        sock_default = default.transport.socket  # type: ignore[attr-defined]
        sock_big = big.transport.socket  # type: ignore[attr-defined]
        for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
            # Linux doubles what it grants; rmem_max may cap it, but not below the default
            assert sock_big.getsockopt(socket.SOL_SOCKET, opt) >= sock_default.getsockopt(
                socket.SOL_SOCKET, opt)
        assert sock_big.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) > sock_default.getsockopt(
            socket.SOL_SOCKET, socket.SO_RCVBUF) or _rmem_max() <= 212992


def _rmem_max() -> int:
    try:
        with open("/proc/sys/net/core/rmem_max") as f:
            return int(f.read())
    except OSError:
        return 0
