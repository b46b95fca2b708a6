from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

import aiodisp
from tests.helpers.adapters import KeyAdapter
from tests.helpers.servers import echo_server

uvloop: Any
try:
    import uvloop
except ImportError:  # pragma: no cover - uvloop is in the dev extra
    uvloop = None

def pytest_configure(config: Any) -> None:
    config.addinivalue_line(
        "markers", "both_loops: run every async test of the module on asyncio and on uvloop"
    )


def pytest_asyncio_loop_factories(config: Any, item: Any) -> dict[str, Any]:
    """Tests marked ``both_loops`` (driver and transport behaviour) run on every loop."""
    factories: dict[str, Any] = {"asyncio": asyncio.new_event_loop}
    if uvloop is not None and item.get_closest_marker("both_loops") is not None:
        factories["uvloop"] = uvloop.new_event_loop
    return factories


@pytest.fixture
def peer() -> Iterator[socket.socket]:
    """A bare non-blocking UDP socket on loopback: a peer the test drives by hand
    (read it with tests.helpers.flood.recv_datagram and drain)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    yield sock
    sock.close()


@pytest.fixture
def adapter() -> KeyAdapter:
    return KeyAdapter()


@pytest.fixture
async def udp_pair(adapter: KeyAdapter) -> AsyncIterator[tuple[Any, Any]]:
    server = await aiodisp.open_udp(adapter, ("127.0.0.1", 0))
    client = await aiodisp.open_udp(adapter, ("127.0.0.1", 0))
    task = asyncio.create_task(echo_server(server))
    yield client, server
    await client.close()
    await server.close()
    await task
