"""Defaults that hold under a burst: loopback UDP, every option left alone.

10,000 requests at once from one client, and 1,000 at once from each of 8
clients, to one echo server: every one is answered, none times out, and the
retransmitted datagrams are at most 5 % of the requests. (With one send per
request and no window, the issue's starting point, a thousand at once lost
most of their replies; with retransmission but no window, the adaptive
timeout fired for thousands of calls still queued at the server.)
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import aiodisp
from tests.helpers.adapters import KeyAdapter
from tests.helpers.servers import echo_server

pytestmark = pytest.mark.both_loops


async def _burst(clients: int, each: int) -> list[aiodisp.Stats]:
    adapter = KeyAdapter()
    server = await aiodisp.open_udp(adapter)
    serving = asyncio.create_task(echo_server(server))
    peers = [await aiodisp.open_udp(adapter) for _ in range(clients)]
    try:
        async def one(d: aiodisp.Dispatcher[Any], i: int) -> bool:
            reply = await d.request((i, b"burst"), server.local_addr)  # default timeout, 5 s
            return bool(reply == (i, b"burst"))

        results = await asyncio.gather(
            *(one(d, i) for d in peers for i in range(each)), return_exceptions=True
        )
        failures = [r for r in results if r is not True]
        assert not failures, failures[:3]
        return [d.stats for d in peers]
    finally:
        for d in peers:
            await d.close()
        await server.close()
        await serving


@pytest.mark.parametrize(("clients", "each"), [(1, 10_000), (8, 1_000)], ids=["1x10000", "8x1000"])
async def test_a_burst_completes_with_no_timeout_and_few_retransmissions(
    clients: int, each: int
) -> None:
    stats = await _burst(clients, each)
    requests = sum(s.requests for s in stats)
    assert requests == clients * each
    assert sum(s.timeouts for s in stats) == 0
    assert sum(s.retransmissions for s in stats) <= 0.05 * requests
