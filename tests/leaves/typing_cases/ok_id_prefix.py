"""IdPrefixAdapter: M is IdMessage, from the factory through every call (async and sync)."""

from __future__ import annotations

import asyncio
import os
import tempfile
from typing import assert_type

import aiodisp
import aiodisp.sync
from aiodisp.adapters import IdMessage, IdPrefixAdapter

adapter: aiodisp.MessageAdapter[IdMessage] = IdPrefixAdapter()


async def main() -> None:
    a, b = await aiodisp.open_memory_pair(IdPrefixAdapter())
    assert_type(a, aiodisp.Dispatcher[IdMessage])
    async with a, b:
        ask = asyncio.create_task(a.request(IdMessage(1, b"ping"), b.local_addr))
        got = await b.recv_from(timeout=5)
        assert_type(got, aiodisp.Received[IdMessage])
        assert_type(got.msg, IdMessage)
        msg, size, addr = got
        assert_type(msg, IdMessage)
        assert_type(size, int)
        await b.notify_unreliable(IdPrefixAdapter().make_reply(msg, msg.payload), addr)
        reply = await ask
        assert_type(reply, IdMessage)
        assert reply == IdMessage(1, b"ping", True)
        await a.notify(IdMessage(2), b.local_addr)
        async for received in b:
            assert_type(received, aiodisp.Received[IdMessage])
            assert_type(received.msg.payload, bytes)
            break


def blocking() -> None:
    s, t = aiodisp.sync.open_memory_pair(IdPrefixAdapter(), framing="ack")
    assert_type(s, aiodisp.sync.SyncDispatcher[IdMessage])
    assert_type(s.framing, aiodisp.Framing)
    with s, t:

        def echo(msg: IdMessage, addr: object) -> IdMessage:
            return msg._replace(reply=True)

        t.notify_unreliable(IdMessage(5), s.local_addr)
        t.notify(IdMessage(6), s.local_addr)
        got = s.recv_from(timeout=5)
        assert_type(got, aiodisp.Received[IdMessage])
        assert_type(got.msg, IdMessage)
        for received in s:
            assert_type(received.msg, IdMessage)
            break
        assert echo(got.msg, got.addr).reply


async def factories(where: str) -> None:
    d = await aiodisp.open_udp(IdPrefixAdapter(), ("127.0.0.1", 0), framing="raw")
    assert_type(d, aiodisp.Dispatcher[IdMessage])
    u = await aiodisp.open_unix(IdPrefixAdapter(), os.path.join(where, "a.sock"))
    assert_type(u, aiodisp.Dispatcher[IdMessage])
    await d.close()
    await u.close()
    with aiodisp.sync.open_udp(IdPrefixAdapter(), ("127.0.0.1", 0), framing="raw") as s:
        assert_type(s, aiodisp.sync.SyncDispatcher[IdMessage])
    with aiodisp.sync.open_unix(IdPrefixAdapter(), os.path.join(where, "b.sock")) as s:
        assert_type(s, aiodisp.sync.SyncDispatcher[IdMessage])


if __name__ == "__main__":
    asyncio.run(main())
    blocking()
    with tempfile.TemporaryDirectory() as where:
        asyncio.run(factories(where))
