"""A server bound to a wildcard answers from the address it was reached at."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest

import aiodisp
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


@pytest.fixture(params=["0.0.0.0", pytest.param("::", marks=needs_ipv6)])
async def wildcard_server(request: Any) -> AsyncIterator[aiodisp.Dispatcher[Any]]:
    server = await aiodisp.open_udp(KeyAdapter(), (request.param, 0))
    task = asyncio.create_task(echo_server(server))
    yield server
    await server.close()
    await task


async def ask(client_bind: tuple[Any, ...], server_addr: tuple[Any, ...]) -> Any:
    async with await aiodisp.open_udp(KeyAdapter(), client_bind) as client:
        reply = await client.request((1, b"where from?"), server_addr, timeout=2)
        assert client.stats.wrong_source == 0
        return reply


async def test_a_request_to_a_secondary_address_gets_its_reply(
    wildcard_server: aiodisp.Dispatcher[Any],
) -> None:
    port = wildcard_server.local_addr[1]
    # 127.0.0.2 is this host's too, but the kernel would answer 127.0.0.1 from 127.0.0.1
    assert await ask(("127.0.0.1", 0), ("127.0.0.2", port)) == (1, b"where from?")
    transport: Any = wildcard_server.transport
    assert transport.answers_from_reached_address
    assert "127.0.0.2" in {transport.source_for(a) for a in transport._sources.sources}


async def test_a_request_to_the_servers_own_wildcard_address_gets_its_reply(
    wildcard_server: aiodisp.Dispatcher[Any],
) -> None:
    local = wildcard_server.local_addr
    client_bind = ("::1", 0) if ":" in local[0] else ("127.0.0.1", 0)
    assert await ask(client_bind, local) == (1, b"where from?")
    assert await ask(client_bind, local[:2]) == (1, b"where from?")


@needs_ipv6
async def test_a_dual_stack_server_answers_ipv4_and_ipv6_clients_from_where_they_called() -> None:
    server = await aiodisp.open_udp(KeyAdapter())  # the default: dual-stack wildcard
    task = asyncio.create_task(echo_server(server))
    try:
        port = server.local_addr[1]
        assert await ask(("127.0.0.1", 0), ("127.0.0.2", port)) == (1, b"where from?")
        assert await ask(("127.0.0.1", 0), ("127.0.0.1", port)) == (1, b"where from?")
        assert await ask(("::1", 0), ("::1", port)) == (1, b"where from?")
        assert await ask(("127.0.0.1", 0), ("0.0.0.0", port)) == (1, b"where from?")
        # an IPv4 client given the server's own ("::", port, 0, 0) reaches it too
        assert await ask(("127.0.0.1", 0), server.local_addr) == (1, b"where from?")
        assert await ask(("::1", 0), server.local_addr) == (1, b"where from?")
    finally:
        await server.close()
        await task


async def test_sources_are_remembered_per_peer_and_bounded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from aiodisp._transports import pktinfo

    monkeypatch.setattr(pktinfo, "SOURCES_MAX", 8)
    server = await aiodisp.open_udp(KeyAdapter(), ("0.0.0.0", 0))
    task = asyncio.create_task(echo_server(server))
    try:
        port = server.local_addr[1]
        for i in range(20):
            assert await ask(("127.0.0.1", 0), (f"127.0.0.{2 + i % 3}", port)) == (
                1, b"where from?")
        transport: Any = server.transport
        assert len(transport._sources.sources) <= 8
    finally:
        await server.close()
        await task
