"""Defaults that hold in the field: a dual-stack wildcard socket, IPv4 peers as 2-tuples,
large socket buffers."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest

import aiodisp
from aiodisp._transports.sockets import DEFAULT_BUFFER_SIZE, make_udp_socket
from tests.helpers.adapters import KeyAdapter
from tests.helpers.servers import echo_server

pytestmark = pytest.mark.both_loops


def has_ipv6() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


needs_ipv6 = pytest.mark.skipif(not has_ipv6(), reason="this machine has no IPv6 loopback")


def sysctl(name: str) -> int:
    with open(f"/proc/sys/net/core/{name}") as f:
        return int(f.read())


@needs_ipv6
async def test_the_default_socket_is_a_dual_stack_wildcard() -> None:
    async with await aiodisp.open_udp(KeyAdapter()) as d:
        host, port, _flowinfo, _scope = d.local_addr
        assert host == "::" and port > 0
        sock: socket.socket = d.transport.socket  # type: ignore[attr-defined]
        assert sock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 0


@needs_ipv6
async def test_an_ipv4_peer_of_a_dual_stack_socket_is_a_2_tuple_both_ways() -> None:
    adapter = KeyAdapter()
    async with await aiodisp.open_udp(adapter) as server, \
            await aiodisp.open_udp(adapter, ("127.0.0.1", 0)) as v4:
        port = server.local_addr[1]
        asking = asyncio.create_task(v4.request((1, b"v4"), ("127.0.0.1", port), timeout=2))
        received = await server.recv_from(timeout=2)
        assert received.addr == v4.local_addr  # ("127.0.0.1", port), not ::ffff:...
        await server.notify_unreliable(received.msg, received.addr)  # the 2-tuple is sendable
        assert await asking == (1, b"v4")
        mapped = ("::ffff:127.0.0.1", v4.local_addr[1], 0, 0)
        assert await server.transport.resolve(mapped) == v4.local_addr
        assert await server.transport.resolve(v4.local_addr) == v4.local_addr


@needs_ipv6
async def test_a_dual_stack_client_reaches_an_ipv4_server_by_either_form() -> None:
    adapter = KeyAdapter()
    async with await aiodisp.open_udp(adapter, ("127.0.0.1", 0)) as server, \
            await aiodisp.open_udp(adapter) as client:
        task = asyncio.create_task(echo_server(server))
        port = server.local_addr[1]
        for i, addr in enumerate([("127.0.0.1", port), ("::ffff:127.0.0.1", port),
                                  ("::ffff:127.0.0.1", port, 0, 0), ("localhost", port)]):
            if addr[0] == "localhost" and (await client.transport.resolve(addr))[0] != "127.0.0.1":
                continue  # localhost is ::1 first here; nothing listens there
            assert await client.request((i, b"x"), addr, timeout=2) == (i, b"x")
        assert client.stats.wrong_source == 0
    await task


async def test_socket_buffers_are_raised_by_default_and_reported_as_granted() -> None:
    async with await aiodisp.open_udp(KeyAdapter(), ("127.0.0.1", 0)) as d, \
            await aiodisp.open_udp(KeyAdapter(), ("127.0.0.1", 0), buffer_size=None) as small:
        transport: Any = d.transport
        rcv, snd = transport.buffer_sizes
        # Linux grants twice what is asked (its bookkeeping), capped by rmem_max / wmem_max.
        assert rcv == 2 * min(DEFAULT_BUFFER_SIZE, sysctl("rmem_max"))
        assert snd == 2 * min(DEFAULT_BUFFER_SIZE, sysctl("wmem_max"))
        untouched: Any = small.transport
        assert untouched.buffer_sizes[0] == sysctl("rmem_default")


async def test_the_wildcard_fallback_is_ipv4_without_ipv6(monkeypatch: pytest.MonkeyPatch) -> None:
    real = socket.socket

    def no_ipv6(family: int = socket.AF_INET, *args: Any, **kwargs: Any) -> socket.socket:
        if family == socket.AF_INET6:
            raise OSError(97, "Address family not supported by protocol")
        return real(family, *args, **kwargs)

    monkeypatch.setattr(socket, "socket", no_ipv6)
    sock, limit = make_udp_socket()
    monkeypatch.undo()
    with sock:
        assert sock.family == socket.AF_INET and sock.getsockname()[0] == "0.0.0.0"
        assert limit == 65507
