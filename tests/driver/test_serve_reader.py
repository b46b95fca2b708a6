"""The inline server's socket reader (Server._direct_receiver's ``reader``) is a copy of
SocketTransport's read loop with the direct receiver written out in it, kept for speed.
Over real UDP sockets, the same datagrams go through it, through the direct receiver
alone and through the core's path: every counter, every datagram sent back and every
error reported must be the same. (tests/driver/test_serve_direct.py pins the direct
receiver to the core's path with a scripted carrier.)"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest

import aiodisp
from aiodisp._serve import Server
from aiodisp._transports.sockets import SocketTransport
from tests.driver.test_serve_direct import KeyOnlyAdapter, TagAdapter, handler
from tests.helpers.flood import drain, settle


async def script(adapter: Any, mode: str) -> dict[str, Any]:
    d = await aiodisp.open_udp(adapter, ("127.0.0.1", 0), framing="raw", max_queue=4,
                               max_datagram_size=1500)
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peer.bind(("127.0.0.1", 0))
    peer.setblocking(False)
    elsewhere = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    elsewhere.bind(("127.0.0.1", 0))
    errors: list[BaseException] = []
    srv = Server(d, handler, on_error=lambda exc, msg, addr: errors.append(exc))
    srv._direct = mode != "core"
    srv._fused = mode == "reader"
    to = d.local_addr

    def received() -> int:
        return d.stats.received

    try:
        for data in (b"Qq1:first", b"Qq2:second"):  # queued before serving: handled first
            peer.sendto(data, to)
        await settle(lambda: d.queued == 2)
        running = asyncio.create_task(srv.run())
        await asyncio.sleep(0)
        await settle(lambda: d.queued == 0)
        socket_reader = isinstance(d.transport, SocketTransport) and d.transport.read_path
        assert (d._reader is not None) is (mode == "reader" and bool(socket_reader))
        burst = [b"Qa:hello", b"", b"Q" + b"x" * 1600, b"!garbage", b"Rz:unknown", b"Qb:raise",
                 b"Qc:none", b"Qd:big", b"Qe:unencodable", b"Qf:ba", b"Qlist:x"]
        before = received()
        for data in burst:
            peer.sendto(data, to)
        await settle(lambda: received() == before + len(burst))
        request = asyncio.create_task(
            d.request(("k", b"ask", False), peer.getsockname(), timeout=5.0))
        answers: list[bytes] = []

        def asked() -> bool:
            answers.extend(drain(peer))
            return any(data.startswith(b"Qk:ask") for data in answers)

        await settle(asked)
        elsewhere.sendto(b"Rk:from elsewhere", to)
        await settle(lambda: received() == before + len(burst) + 1)
        peer.sendto(b"Qk:same key, a message", to)
        peer.sendto(b"Rk:the answer", to)
        result = await request
        peer.sendto(b"Rk:late copy", to)
        peer.sendto(b"Qi:last", to)
        await settle(lambda: received() == 2 + len(burst) + 5)
        await d.close()
        stats = await running
        assert d._reader is None
        return {
            "stats": d.stats,
            "serve": stats,
            "answers": answers + drain(peer),
            "result": result,
            "errors": [(type(e).__name__, str(e)) for e in errors],
        }
    finally:
        await d.close()
        peer.close()
        elsewhere.close()


@pytest.mark.parametrize("adapter", [TagAdapter(), KeyOnlyAdapter()], ids=["is_reply", "key_only"])
async def test_the_socket_reader_does_what_the_direct_receiver_and_the_core_do(
    adapter: Any,
) -> None:
    reader = await script(adapter, "reader")
    direct = await script(adapter, "direct")
    core = await script(adapter, "core")
    assert reader == direct == core
    # (without is_reply the replies nobody waits for, or from elsewhere, are messages,
    # and b"Qlist:x"'s unhashable key is a decode error)
    handled = 11 if isinstance(adapter, TagAdapter) else 13
    assert reader["serve"].handled == handled and reader["serve"].send_errors == 2
    assert reader["stats"].empty == 1 and reader["stats"].oversize == 1
    assert b"Ra:hello" in reader["answers"] and b"Ri:last" in reader["answers"]


async def test_a_handler_that_turns_out_async_takes_the_reader_away() -> None:
    """The third message's reply is awaitable: serving goes on with tasks, through the
    transport's own read loop, and every message is answered."""
    calls = 0

    def sometimes_async(msg: Any, addr: Any) -> Any:
        nonlocal calls
        calls += 1
        key, body, _ = msg
        if calls == 3:
            async def later() -> Any:
                return (key, body, True)
            return later()
        return (key, body, True)

    d = await aiodisp.open_udp(TagAdapter(), ("127.0.0.1", 0), framing="raw")
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peer.bind(("127.0.0.1", 0))
    peer.setblocking(False)
    running = asyncio.create_task(Server(d, sometimes_async).run())
    try:
        await asyncio.sleep(0)
        if not isinstance(d.transport, SocketTransport):
            pytest.skip("uvloop reads a specific bind through its own transport: no reader")
        assert d._reader is not None
        for i in range(10):
            peer.sendto(b"Q%d:m" % i, d.local_addr)
        answers: list[bytes] = []
        loop = asyncio.get_running_loop()
        while len(answers) < 10:
            answers.append(await asyncio.wait_for(loop.sock_recv(peer, 4096), 5))
        assert sorted(answers) == sorted(b"R%d:m" % i for i in range(10))
        assert d._reader is None and d._direct is None
    finally:
        await d.close()
        await running
        peer.close()
