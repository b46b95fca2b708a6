"""JsonAdapter and MsgpackAdapter: M is dict[str, Any], with or without a reply field."""

from __future__ import annotations

import asyncio
from typing import Any, assert_type

import aiodisp
import aiodisp.sync
from aiodisp.adapters import JsonAdapter, MsgpackAdapter

as_json: aiodisp.MessageAdapter[dict[str, Any]] = JsonAdapter(reply_field=None)
as_msgpack: aiodisp.MessageAdapter[dict[str, Any]] = MsgpackAdapter()


async def main() -> None:
    adapter = JsonAdapter(key_field="seq", reply_field="resp")
    a, b = await aiodisp.open_memory_pair(adapter)
    assert_type(a, aiodisp.Dispatcher[dict[str, Any]])
    async with a, b:
        ask = asyncio.create_task(a.request({"seq": 1, "op": "time"}, b.local_addr))
        msg, _size, addr = await b.recv_from(timeout=5)
        assert_type(msg, dict[str, Any])
        await b.notify_unreliable(adapter.make_reply(msg, now=12.5), addr)
        reply = await ask
        assert_type(reply, dict[str, Any])
        assert reply["now"] == 12.5 and adapter.is_reply(reply)


def blocking() -> None:
    s, t = aiodisp.sync.open_memory_pair(JsonAdapter(reply_field=None))
    assert_type(s, aiodisp.sync.SyncDispatcher[dict[str, Any]])
    with s, t:
        t.notify_unreliable({"id": 3}, s.local_addr)
        assert_type(s.recv_from(timeout=5).msg, dict[str, Any])


if __name__ == "__main__":
    asyncio.run(main())
    blocking()
