from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator
from typing import Any

import pytest

import aiodisp

try:
    import uvloop
except ImportError:  # pragma: no cover - uvloop is in the dev extra
    uvloop = None

#: Test modules about the driver and transports run on every loop we support.
BOTH_LOOPS = {
    "test_dispatcher.py",
    "test_reliability.py",
    "test_hostile_garbage.py",
    "test_hostile_spoofing.py",
    "test_serve_inline.py",
}


def pytest_asyncio_loop_factories(config: Any, item: Any) -> dict[str, Any]:
    factories: dict[str, Any] = {"asyncio": asyncio.new_event_loop}
    if uvloop is not None and item.path.name in BOTH_LOOPS:
        factories["uvloop"] = uvloop.new_event_loop
    return factories


class KeyAdapter:
    """Messages are (key, payload) tuples: 8-byte key then payload; no is_reply."""

    def msg_to_raw(self, msg: tuple[int, bytes]) -> bytes:
        return struct.pack(">Q", msg[0]) + msg[1]

    def raw_to_msg(self, raw: bytes) -> tuple[int, bytes]:
        return struct.unpack_from(">Q", raw)[0], bytes(raw[8:])

    def msg_key(self, msg: tuple[int, bytes]) -> int:
        return msg[0]


class FlagAdapter(KeyAdapter):
    """(key, payload, is_reply) triples: a flag byte tells replies apart."""

    def msg_to_raw(self, msg: Any) -> bytes:  # type: ignore[override]
        return struct.pack(">QB", msg[0], 1 if msg[2] else 0) + msg[1]

    def raw_to_msg(self, raw: bytes) -> Any:
        key, flag = struct.unpack_from(">QB", raw)
        return key, bytes(raw[9:]), bool(flag)

    def is_reply(self, msg: Any) -> bool:
        return bool(msg[2])


@pytest.fixture
def adapter() -> KeyAdapter:
    return KeyAdapter()


async def echo_server(d: aiodisp.Dispatcher[Any], *, flag: bool = False) -> None:
    """Reply to every message with the same key and payload."""
    async for msg, _size, addr in d:
        reply = (msg[0], msg[1], True) if flag else msg
        await d.notify_unreliable(reply, addr)


@pytest.fixture
async def udp_pair(adapter: KeyAdapter) -> AsyncIterator[tuple[Any, Any]]:
    server = await aiodisp.open_udp(adapter)
    client = await aiodisp.open_udp(adapter)
    task = asyncio.create_task(echo_server(server))
    yield client, server
    await client.close()
    await server.close()
    await task
