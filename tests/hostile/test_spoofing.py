"""Spoofed replies and ACKs: only the address a call went to can complete it.

The attacker here is another local socket that knows the key (or the packet
id) of a pending call: the worst an off-path attacker who cannot forge its
source address can do. Its replies are dropped and counted, it gets no ACK
back, and the genuine reply still completes the call.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import Iterator
from typing import Any

import pytest

import aiodisp
from aiodisp import Framing
from aiodisp._core.framing import FLAG_ACK, FLAG_ACK_REQUESTED, pack_header, unpack_header
from aiodisp.adapters import IdMessage, IdPrefixAdapter
from tests.helpers.adapters import KeyAdapter
from tests.helpers.flood import accounted, recv_datagram, send_paced, settle

pytestmark = pytest.mark.both_loops

LOOP = "127.0.0.1"
ADAPTER = IdPrefixAdapter()


def udp_socket(host: str = LOOP, family: int = socket.AF_INET) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.bind((host, 0))
    sock.setblocking(False)
    return sock


@pytest.fixture
def server() -> Iterator[socket.socket]:
    """The genuine peer, a bare socket so the test decides when it answers."""
    with udp_socket() as sock:
        yield sock


@pytest.fixture
def attacker() -> Iterator[socket.socket]:
    with udp_socket() as sock:
        yield sock


async def recv(sock: socket.socket, timeout: float = 5.0) -> tuple[bytes, Any]:
    return await recv_datagram(sock, timeout)


def nothing_waiting(sock: socket.socket) -> bool:
    try:
        sock.recv(70_000)
    except BlockingIOError:
        return True
    return False


def forgeries(key: int, request_id: int, framing: str, count: int) -> Iterator[bytes]:
    """Forged replies with the right key, in every header variant an attacker might try."""
    body = ADAPTER.msg_to_raw(IdMessage(key, b"forged", reply=True))
    for i in range(count):
        if framing == "raw":
            yield body
            continue
        variant = i % 3
        if variant == 0:
            yield pack_header(0, 10_000 + i) + body  # a fresh packet id
        elif variant == 1:
            yield pack_header(FLAG_ACK_REQUESTED, 10_000 + i) + body  # asks for an ACK
        else:
            yield pack_header(0, request_id) + body  # the request's own id


@pytest.mark.parametrize("framing", ["ack", "raw"])
async def test_forged_replies_are_ignored_and_the_genuine_one_wins(
    framing: Framing, server: socket.socket, attacker: socket.socket
) -> None:
    d = await aiodisp.open_udp(ADAPTER, ("127.0.0.1", 0), framing=framing)
    async with d:
        call = asyncio.create_task(
            d.request(IdMessage(4242, b"question"), server.getsockname(), timeout=10)
        )
        datagram, client_addr = await recv(server)
        request_id = unpack_header(datagram)[1] if framing == "ack" else -1
        # The attacker knows the key and even the packet id; it answers first, 300 times.
        received = lambda: d.stats.received  # noqa: E731
        await send_paced(attacker, forgeries(4242, request_id, framing, 300), d.local_addr,
                         received)
        assert d.stats.wrong_source == 300
        assert not call.done()
        assert d.pending == 1 and d.queued == 0
        assert d.stats.acks_sent == 0 and nothing_waiting(attacker)  # no ACK, nothing back
        # The genuine reply completes the call.
        genuine = ADAPTER.msg_to_raw(IdMessage(4242, b"genuine", reply=True))
        if framing == "ack":
            genuine = pack_header(0, 99) + genuine
        server.sendto(genuine, client_addr)
        assert await call == IdMessage(4242, b"genuine", reply=True)
        # Once the call is over, the same forgeries are just unknown replies.
        await send_paced(attacker, forgeries(4242, request_id, framing, 30), d.local_addr,
                         received)
        s = d.stats
        assert s.received == 331 and accounted(s)
        assert (s.wrong_source, s.replies_matched, s.unknown_replies) == (300, 1, 30)
        assert s.delivered == 0 and d.queued == 0


async def test_without_is_reply_a_forged_reply_is_an_ordinary_message(
    server: socket.socket, attacker: socket.socket
) -> None:
    d = await aiodisp.open_udp(KeyAdapter(), ("127.0.0.1", 0))
    async with d:
        call = asyncio.create_task(d.request((7, b"q"), server.getsockname(), timeout=10))
        _, client_addr = await recv(server)
        forged = pack_header(0, 1) + struct.pack(">Q", 7) + b"forged"
        attacker.sendto(forged, d.local_addr)
        msg, size, addr = await d.recv_from(timeout=5)
        assert (msg, size, addr) == ((7, b"forged"), 14, attacker.getsockname())
        assert not call.done() and d.stats.wrong_source == 0
        server.sendto(pack_header(0, 2) + struct.pack(">Q", 7) + b"genuine", client_addr)
        assert await call == (7, b"genuine")


async def test_a_reply_from_the_right_host_but_another_port_is_refused(
    server: socket.socket,
) -> None:
    # Same IP address, other port: check_source compares the whole address.
    d = await aiodisp.open_udp(ADAPTER, ("127.0.0.1", 0))
    async with d:
        call = asyncio.create_task(d.request(IdMessage(1), server.getsockname(), timeout=10))
        _, client_addr = await recv(server)
        with udp_socket() as neighbour:
            assert neighbour.getsockname()[0] == server.getsockname()[0]
            body = ADAPTER.msg_to_raw(IdMessage(1, b"neighbour", reply=True))
            neighbour.sendto(pack_header(0, 5) + body, d.local_addr)
            await settle(lambda: d.stats.wrong_source == 1)
        assert not call.done()
        server.sendto(pack_header(0, 6) + ADAPTER.msg_to_raw(IdMessage(1, b"ok", True)),
                      client_addr)
        assert (await call).payload == b"ok"


async def test_source_check_off_lets_whoever_knows_the_key_answer(
    server: socket.socket, attacker: socket.socket
) -> None:
    # check_source=False trades this defence away; the key is then all that is left.
    d = await aiodisp.open_udp(ADAPTER, ("127.0.0.1", 0), check_source=False)
    async with d:
        call = asyncio.create_task(d.request(IdMessage(9), server.getsockname(), timeout=10))
        await recv(server)
        body = ADAPTER.msg_to_raw(IdMessage(9, b"forged", reply=True))
        attacker.sendto(pack_header(0, 1) + body, d.local_addr)
        assert (await call).payload == b"forged"
        assert d.stats.wrong_source == 0


async def test_forged_ack_from_another_socket_does_not_complete_a_notify(
    server: socket.socket, attacker: socket.socket
) -> None:
    d = await aiodisp.open_udp(ADAPTER, ("127.0.0.1", 0))
    async with d:
        call = asyncio.create_task(
            d.notify(IdMessage(3, b"note"), server.getsockname(), timeout=10)
        )
        datagram, client_addr = await recv(server)
        flags, packet_id = unpack_header(datagram)
        assert flags == FLAG_ACK_REQUESTED
        for delta in (0, 0, 0, 1, -1):  # the exact id, and its neighbours
            attacker.sendto(pack_header(FLAG_ACK, packet_id + delta), d.local_addr)
        await settle(lambda: d.stats.unknown_acks == 5)
        assert not call.done() and d.pending == 1
        server.sendto(pack_header(FLAG_ACK, packet_id), client_addr)
        await call
        assert d.stats.acks_received == 1 and d.pending == 0


async def test_forged_requests_from_a_spoofed_peer_cannot_read_another_peers_cached_reply(
    attacker: socket.socket,
) -> None:
    """The reply cache is indexed by (sender, packet id): copying another peer's packet
    id from another address delivers a new message, it does not replay the reply."""
    client = await aiodisp.open_udp(ADAPTER, ("127.0.0.1", 0))
    server = await aiodisp.open_udp(ADAPTER, ("127.0.0.1", 0))

    async def serve() -> None:
        async for msg, _, addr in server:
            await server.notify_unreliable(msg._replace(reply=True, payload=b"secret"), addr)

    serving = asyncio.create_task(serve())
    async with client, server:
        assert (await client.request(IdMessage(5), server.local_addr, timeout=5)).payload == (
            b"secret")
        # the (random) id the client just used, as the server logged its delivery
        request_id = next(pid for (sender, pid) in server._core.log.by_id
                          if sender == client.local_addr)
        attacker.sendto(pack_header(0, request_id) + ADAPTER.msg_to_raw(IdMessage(5)),
                        server.local_addr)
        reply, _ = await recv(attacker)  # the server's application answers a new request...
        assert server.stats.duplicates == 0 and server.stats.replies_resent == 0
        assert server.stats.delivered == 2
        assert ADAPTER.raw_to_msg(reply[8:]).payload == b"secret"  # ...as it chose to
    await serving


def has_dual_stack() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not has_dual_stack(), reason="no IPv6 on this machine")
async def test_dual_stack_socket_matches_replies_from_ipv4_peers(server: socket.socket) -> None:
    # The reply arrives from ::ffff:127.0.0.1; the request went to 127.0.0.1. Both are
    # the same peer: no false wrong_source.
    d = await aiodisp.open_udp(ADAPTER, local_addr=("::", 0))
    async with d:
        call = asyncio.create_task(d.request(IdMessage(11), server.getsockname(), timeout=10))
        datagram, _ = await recv(server)
        port = d.local_addr[1]
        server.sendto(datagram[:8] + ADAPTER.msg_to_raw(IdMessage(11, b"v4", True)),
                      (LOOP, port))
        assert (await call).payload == b"v4"
        assert d.stats.wrong_source == 0
