"""Over real UDP: packet ids a peer cannot predict, and replies that name the request they
answer, so the network's copy of an old reply completes no later request with its key."""

from __future__ import annotations

import asyncio
import socket

import pytest

import aiodisp
from aiodisp.adapters import IdMessage, IdPrefixAdapter

pytestmark = pytest.mark.both_loops

FLAG_REPLY = 0x04


async def recv(sock: socket.socket) -> tuple[bytes, tuple[str, int]]:
    """The next datagram at ``sock`` (polled: uvloop has no sock_recvfrom)."""
    async with asyncio.timeout(2.0):
        while True:
            try:
                data, addr = sock.recvfrom(2048)
            except BlockingIOError:
                await asyncio.sleep(0.001)
            else:
                return data, addr


def reply_to(request: bytes, payload: bytes) -> bytes:
    """What an aiodisp server sends back: flag 0x04, the request's packet id, the reply."""
    adapter = IdPrefixAdapter()
    msg = adapter.raw_to_msg(request[8:])
    return bytes([FLAG_REPLY]) + request[1:8] + adapter.msg_to_raw(
        adapter.make_reply(msg, payload))


async def test_a_copy_of_an_old_reply_completes_no_later_request_with_its_key(
    peer: socket.socket,
) -> None:
    async with await aiodisp.open_udp(IdPrefixAdapter(), ("127.0.0.1", 0)) as client:
        target = peer.getsockname()
        first = asyncio.create_task(client.request(IdMessage(7, b"one"), target, timeout=2))
        request1, addr = await recv(peer)
        old_reply = reply_to(request1, b"r1")
        peer.sendto(old_reply, addr)
        assert (await first).payload == b"r1"

        second = asyncio.create_task(client.request(IdMessage(7, b"two"), target, timeout=2))
        request2, addr = await recv(peer)
        assert request2[1:8] != request1[1:8]
        peer.sendto(old_reply, addr)  # the network's late copy of reply 1
        await asyncio.sleep(0.05)
        assert not second.done() and client.stats.unknown_replies == 1
        peer.sendto(reply_to(request2, b"r2"), addr)
        assert (await second).payload == b"r2"


async def test_an_aiodisp_server_names_the_request_in_its_reply(peer: socket.socket) -> None:
    async with await aiodisp.open_udp(IdPrefixAdapter(), ("127.0.0.1", 0)) as server:
        serving = asyncio.create_task(server.serve(
            lambda msg, _addr: IdPrefixAdapter().make_reply(msg, b"ok")))
        request = bytes([0]) + (123456789).to_bytes(7, "big") + IdPrefixAdapter().msg_to_raw(
            IdMessage(3, b"q"))
        peer.sendto(request, server.local_addr)
        reply, _ = await recv(peer)
        assert reply[0] == FLAG_REPLY and int.from_bytes(reply[1:8], "big") == 123456789
        peer.sendto(request, server.local_addr)  # a retransmitted copy
        again, _ = await recv(peer)
        assert again == reply  # the cached reply, the same bytes
    await serving


async def test_ids_one_peer_sees_say_nothing_of_the_ids_another_gets() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as a, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as b:
        for s in (a, b):
            s.bind(("127.0.0.1", 0))
            s.setblocking(False)
        async with await aiodisp.open_udp(IdPrefixAdapter(), ("127.0.0.1", 0)) as d:
            ids: dict[str, list[int]] = {"a": [], "b": []}
            for i in range(100):
                for name, sock in (("a", a), ("b", b)):
                    await d.notify_unreliable(IdMessage(i, b""), sock.getsockname())
                    data, _ = await recv(sock)
                    ids[name].append(int.from_bytes(data[1:8], "big"))
    # A shared counter would put every id b gets next to one a just saw.
    assert all(min(abs(x - y) for y in ids["a"]) > 1 << 30 for x in ids["b"])
    assert len(set(ids["a"]) | set(ids["b"])) == 200
