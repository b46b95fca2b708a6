"""The inline server's direct receiver (raw framing) is a copy, kept for speed, of the
core's receive, the inline consumer, frame_oneway and _reply_nowait for a plain message
(see Server._direct_receiver). Both paths go through the same script here: messages
queued before serving, empty, oversize and undecodable datagrams, unhashable keys,
replies to our own request (from its peer and from elsewhere), unknown replies, a
handler that raises or returns nothing, replies that cannot be encoded, are too large
or not bytes, a failing and a full transport. Every counter, every datagram sent and
every error reported must be the same."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import aiodisp
from aiodisp._serve import Server
from tests.helpers.carriers import ScriptedCarrier

Msg = tuple[Any, bytes, bool]
PEER = "peer"
ELSEWHERE = "elsewhere"


class TagAdapter:
    """``Q<key>:<body>`` (a message) or ``R<key>:<body>`` (a reply)."""

    def raw_to_msg(self, raw: bytes) -> Msg:
        kind, rest = raw[:1], raw[1:]
        if kind not in (b"Q", b"R"):
            raise ValueError(f"not a message: {raw!r}")
        key, body = rest.split(b":", 1)
        return ([key] if key == b"list" else key.decode()), body, kind == b"R"

    def msg_to_raw(self, msg: Msg) -> Any:
        key, body, reply = msg
        if body == b"unencodable":
            raise ValueError("cannot encode that")
        raw = (b"R" if reply else b"Q") + str(key).encode() + b":" + body
        return bytearray(raw) if body == b"ba" else raw

    def msg_key(self, msg: Msg) -> Any:
        return msg[0]

    def is_reply(self, msg: Msg) -> bool:
        return msg[2]


class KeyOnlyAdapter:
    """TagAdapter without is_reply: a message is a reply when its key is pending."""

    raw_to_msg = TagAdapter.raw_to_msg
    msg_to_raw = TagAdapter.msg_to_raw
    msg_key = TagAdapter.msg_key


def handler(msg: Msg, addr: Any) -> Any:
    key, body, _ = msg
    if body == b"raise":
        raise ValueError("the handler refuses")
    if body == b"none":
        return None
    if body == b"big":
        return (key, b"x" * 2000, True)
    return (key, body, True)


def inject(carrier: ScriptedCarrier, *datagrams: bytes, addr: Any = PEER) -> None:
    assert carrier.sink is not None
    for data in datagrams:
        carrier.sink.datagram_received(data, addr)


async def script(adapter: Any, *, direct: bool) -> dict[str, Any]:
    carrier = ScriptedCarrier(max_datagram_size=1500)
    d = aiodisp.Dispatcher(carrier, adapter, framing="raw", max_queue=4)
    errors: list[BaseException] = []
    srv = Server(d, handler, on_error=lambda exc, msg, addr: errors.append(exc))
    srv._direct = direct
    inject(carrier, b"Qq1:first", b"Qq2:second")  # queued before serving: handled first
    running = asyncio.create_task(srv.run())
    await asyncio.sleep(0)
    assert (d._direct is not None) is direct
    inject(carrier, b"Qa:hello", b"", b"Q" + b"x" * 1600, b"!garbage", b"Rz:unknown",
           b"Qb:raise", b"Qc:none", b"Qd:big", b"Qe:unencodable", b"Qf:ba", b"Qlist:x")
    request = asyncio.create_task(d.request(("k", b"ask", False), PEER, timeout=5.0))
    while not any(data.startswith(b"Qk:ask") for data, _ in carrier.sent):
        await asyncio.sleep(0)
    inject(carrier, b"Rk:from elsewhere", addr=ELSEWHERE)
    inject(carrier, b"Qk:same key, a message", b"Rk:the answer")
    result = await request
    inject(carrier, b"Rk:late copy")
    carrier.mode = "fail"
    inject(carrier, b"Qg:fails")
    carrier.mode = "blocked"
    inject(carrier, b"Qh:full")
    carrier.drain()
    inject(carrier, b"Qi:last")
    await d.close()
    stats = await running
    assert d._direct is None and "datagram_received" not in d.__dict__
    return {
        "stats": d.stats,
        "serve": stats,
        "sent": carrier.sent,
        "result": result,
        "errors": [(type(e).__name__, str(e), type(e.__cause__).__name__) for e in errors],
    }


@pytest.mark.parametrize("adapter", [TagAdapter(), KeyOnlyAdapter()],
                         ids=["is_reply", "key_only"])
async def test_direct_receiver_and_core_path_do_the_same(adapter: Any) -> None:
    direct = await script(adapter, direct=True)
    core = await script(adapter, direct=False)
    assert direct == core
    assert direct["serve"].handled >= 10 and direct["serve"].send_errors == 4
    # b"!garbage", and b"Qlist:x"'s unhashable key where a key is asked of every
    # message (without is_reply: raw framing asks none of a message that is no reply)
    decode_errors = 1 if isinstance(adapter, TagAdapter) else 2
    assert direct["stats"].decode_errors == decode_errors and direct["stats"].empty == 1
    assert direct["stats"].oversize == 1


async def test_ack_framing_and_message_layers_keep_the_core_path() -> None:
    carrier = ScriptedCarrier()
    d = aiodisp.Dispatcher(carrier, TagAdapter(), framing="ack")
    assert d._direct_serving() is None
    await d.close()

    class Layered(TagAdapter):
        def classify(self, msg: Msg) -> aiodisp.Kind:
            return aiodisp.Kind.REPLY if msg[2] else aiodisp.Kind.MESSAGE

        def transaction_key(self, msg: Msg) -> Any:
            return None

    d = aiodisp.Dispatcher(ScriptedCarrier(), Layered(), framing="raw")
    assert d._direct_serving() is None
    await d.close()


@pytest.mark.both_loops
async def test_the_direct_receiver_takes_udp_datagrams_and_gives_them_back() -> None:
    server = await aiodisp.open_udp(TagAdapter(), ("127.0.0.1", 0), framing="raw")
    client = await aiodisp.open_udp(TagAdapter(), ("127.0.0.1", 0), framing="raw")
    transport: Any = server.transport
    running = asyncio.create_task(server.serve(handler))
    await asyncio.sleep(0)
    assert server._direct is not None
    protocol = getattr(transport, "_protocol", None)
    if protocol is not None:  # the loop's own transport calls the direct receiver itself
        assert protocol.datagram_received == server._direct
    async with client:
        replies = await asyncio.gather(*(client.request((f"n{i}", b"p", False),
                                                        server.local_addr, timeout=5.0)
                                         for i in range(200)))
        assert replies == [(f"n{i}", b"p", True) for i in range(200)]
        # the server's own request to the client still completes
        client_serving = asyncio.create_task(client.serve(handler))
        assert await server.request(("back", b"q", False), client.local_addr,
                                    timeout=5.0) == ("back", b"q", True)
    await client_serving
    await server.close()
    await running
    assert server.stats.delivered == server.stats.consumed == 200
    assert server._direct is None and "datagram_received" not in server.__dict__


@pytest.mark.both_loops
async def test_a_handler_turning_async_gives_the_datagrams_back_to_the_dispatcher() -> None:
    server = await aiodisp.open_udp(TagAdapter(), ("127.0.0.1", 0), framing="raw")
    client = await aiodisp.open_udp(TagAdapter(), ("127.0.0.1", 0), framing="raw")
    protocol = getattr(server.transport, "_protocol", None)

    async def later(msg: Msg) -> Msg:
        await asyncio.sleep(0)
        return (msg[0], msg[1], True)

    def sometimes_async(msg: Msg, addr: Any) -> Any:
        return later(msg) if msg[1] == b"async" else handler(msg, addr)

    running = asyncio.create_task(server.serve(sometimes_async))
    async with client:
        assert await client.request(("a", b"p", False), server.local_addr,
                                    timeout=5.0) == ("a", b"p", True)
        assert server._direct is not None
        for i in range(3):  # served by tasks from the first one on
            assert await client.request((f"b{i}", b"async", False), server.local_addr,
                                        timeout=5.0) == (f"b{i}", b"async", True)
            assert server._direct is None and "datagram_received" not in server.__dict__
            if protocol is not None:
                assert protocol.datagram_received == server.datagram_received
    await server.close()
    await running
    assert server.stats.delivered == server.stats.consumed == 4
