"""Bad datagrams over real UDP: each is dropped into its own counter, none is fatal.

Oversize datagrams, truncated headers, bad flags, ACKs for ids never sent,
adapters that raise or return junk: after each kind the receiver still
serves a normal request, and every datagram read is accounted for.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

import aiodisp
from aiodisp._core.endpoint import Endpoint
from aiodisp._core.framing import FLAG_ACK, FLAG_ACK_REQUESTED, pack_header
from aiodisp.adapters import IdMessage, IdPrefixAdapter
from aiodisp.retry import RetryPolicy
from tests.helpers.flood import accounted, recv_datagram, send_paced, settle

pytestmark = pytest.mark.both_loops

MAX = 512  # the victim's max_datagram_size


class Hostile(Exception):
    """An exception type the dispatcher has never heard of."""


class TrickyAdapter(IdPrefixAdapter):
    """IdPrefixAdapter that fails on command: the payload says how."""

    def raw_to_msg(self, raw: bytes) -> Any:
        msg = super().raw_to_msg(raw)
        p = msg.payload
        if p == b"raise":
            raise ValueError("cannot decode")
        if p == b"hostile":
            raise Hostile("an exception of the adapter's own")
        if p == b"recurse":
            raise RecursionError("maximum recursion depth exceeded")
        if p == b"none":
            return None  # msg_key(None) then fails
        if p == b"junk":
            return 42
        return msg

    def msg_key(self, msg: Any) -> Any:
        if msg.payload == b"unhashable":
            return [msg.id]
        if msg.payload == b"key-raises":
            raise KeyError("no key")
        return msg.id

    def is_reply(self, msg: Any) -> Any:
        if msg.payload == b"is-reply-raises":
            raise TypeError("cannot tell")
        if msg.payload == b"is-reply-junk":
            return _BadBool()
        return msg.reply


class _BadBool:
    def __bool__(self) -> bool:
        raise RuntimeError("neither true nor false")


ADAPTER = TrickyAdapter()


def body(payload: bytes, *, id: int = 1, reply: bool = False) -> bytes:
    return ADAPTER.msg_to_raw(IdMessage(id, payload, reply))


# (name, datagram for ACK framing, the counter it must land in)
BAD_ACK_FRAMED = [
    ("empty", b"", "empty"),
    ("one byte", b"\x01", "header_errors"),
    ("seven bytes", b"\x00" * 7, "header_errors"),
    ("unknown flags", pack_header(0x80, 1) + body(b"x"), "header_errors"),
    ("ack and ack-requested", pack_header(3, 1) + body(b"x"), "header_errors"),
    ("ack with payload", pack_header(FLAG_ACK, 1) + b"payload", "header_errors"),
    ("ack for an id never sent", pack_header(FLAG_ACK, 123456), "unknown_acks"),
    ("header only", pack_header(0, 2), "decode_errors"),
    ("body too short", pack_header(0, 3) + b"\x00\x01", "decode_errors"),
    ("oversize", pack_header(0, 4) + bytes(MAX + 100), "oversize"),
    ("adapter raises", pack_header(0, 5) + body(b"raise"), "decode_errors"),
    ("adapter's own exception", pack_header(0, 6) + body(b"hostile"), "decode_errors"),
    ("recursion error", pack_header(0, 7) + body(b"recurse"), "decode_errors"),
    ("raw_to_msg returns None", pack_header(0, 8) + body(b"none"), "decode_errors"),
    ("raw_to_msg returns junk", pack_header(0, 9) + body(b"junk"), "decode_errors"),
    ("unhashable key", pack_header(0, 10) + body(b"unhashable"), "decode_errors"),
    ("msg_key raises", pack_header(0, 11) + body(b"key-raises"), "decode_errors"),
    ("is_reply raises", pack_header(1, 12) + body(b"is-reply-raises"), "decode_errors"),
    ("is_reply returns junk", pack_header(1, 13) + body(b"is-reply-junk"), "decode_errors"),
    ("reply nobody asked for", pack_header(0, 14) + body(b"", reply=True), "unknown_replies"),
]


@pytest.fixture
def attacker() -> Iterator[socket.socket]:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock


@pytest.fixture
async def victim_and_server() -> AsyncIterator[tuple[Any, Any]]:
    """A victim dispatcher (max datagram MAX) and an echo server it can query."""
    victim = await aiodisp.open_udp(ADAPTER, ("127.0.0.1", 0), max_datagram_size=MAX)
    server = await aiodisp.open_udp(IdPrefixAdapter(), ("127.0.0.1", 0))

    async def serve() -> None:
        async for msg, _, addr in server:
            await server.notify_unreliable(msg._replace(reply=True), addr)

    serving = asyncio.create_task(serve())
    yield victim, server
    await victim.close()
    await server.close()
    await serving


async def still_serves(victim: Any, server: Any, id: int) -> None:
    reply = await victim.request(IdMessage(id, b"ok"), server.local_addr, timeout=5)
    assert reply == IdMessage(id, b"ok", True)


@pytest.mark.parametrize(("name", "datagram", "counter"), BAD_ACK_FRAMED,
                         ids=[case[0] for case in BAD_ACK_FRAMED])
async def test_bad_datagram_is_dropped_into_its_counter(
    name: str, datagram: bytes, counter: str, victim_and_server: Any, attacker: socket.socket
) -> None:
    victim, server = victim_and_server
    before = victim.stats
    await send_paced(attacker, [datagram] * 3, victim.local_addr, lambda: victim.stats.received)
    after = victim.stats
    assert getattr(after, counter) - getattr(before, counter) == 3
    assert after.delivered == 0 and victim.queued == 0 and after.acks_sent == 0
    await still_serves(victim, server, 77)
    assert accounted(victim.stats)


async def test_every_bad_kind_in_one_burst_then_a_request_succeeds(
    victim_and_server: Any, attacker: socket.socket
) -> None:
    victim, server = victim_and_server
    datagrams = [case[1] for case in BAD_ACK_FRAMED] * 20
    await send_paced(attacker, datagrams, victim.local_addr, lambda: victim.stats.received)
    s = victim.stats
    expected: dict[str, int] = {}
    for _, _, counter in BAD_ACK_FRAMED:
        expected[counter] = expected.get(counter, 0) + 20
    assert {name: getattr(s, name) for name in expected} == expected
    assert s.received == len(datagrams) and accounted(s)
    for i in range(5):
        await still_serves(victim, server, 100 + i)


@pytest.mark.parametrize("payload", [b"raise", b"hostile", b"none", b"junk", b"unhashable",
                                     b"key-raises", b"is-reply-raises", b"is-reply-junk"])
async def test_adapter_failures_are_counted_with_raw_framing_too(
    payload: bytes, attacker: socket.socket
) -> None:
    # (over raw framing with is_reply only a reply is asked its key: msg_key's
    # failures are tried on one; see the next test)
    keyed = payload in (b"unhashable", b"key-raises")
    victim = await aiodisp.open_udp(ADAPTER, ("127.0.0.1", 0), framing="raw")
    async with victim:
        await send_paced(attacker, [body(payload, reply=keyed), b"", b"\x00"],
                         victim.local_addr, lambda: victim.stats.received)
        s = victim.stats
        assert (s.decode_errors, s.empty, s.received) == (2, 1, 3)
        assert accounted(s) and victim.queued == 0


@pytest.mark.parametrize("payload", [b"unhashable", b"key-raises"])
async def test_raw_framing_asks_no_key_of_a_message_that_is_no_reply(
    payload: bytes, attacker: socket.socket
) -> None:
    """Nothing needs it (no pending call to match, no delivery log): the message is
    delivered, and a server saves an adapter call per query."""
    victim = await aiodisp.open_udp(ADAPTER, ("127.0.0.1", 0), framing="raw")
    async with victim:
        attacker.sendto(body(payload), victim.local_addr)
        msg, _size, _addr = await victim.recv_from(timeout=5)
        assert msg == IdMessage(1, payload) and victim.stats.decode_errors == 0


async def test_a_datagram_that_only_looks_like_a_reply_to_a_pending_key_is_not_an_ack(
    victim_and_server: Any, attacker: socket.socket
) -> None:
    """An ACK for the id of a pending notify, from the wrong socket, is an unknown ACK."""
    victim, _ = victim_and_server
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))
    silent.setblocking(False)
    try:
        call = asyncio.create_task(victim.notify(IdMessage(1), silent.getsockname(), timeout=10))
        data, _ = await recv_datagram(silent)
        attacker.sendto(pack_header(FLAG_ACK, int.from_bytes(data[1:8], "big")),
                        victim.local_addr)
        await settle(lambda: victim.stats.unknown_acks == 1)
        assert not call.done()
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
    finally:
        silent.close()


@pytest.mark.parametrize("addr", [None, "", b"\x00", ("x",), ("::1", 1, 0, 0, "extra"), 3.5])
def test_odd_but_hashable_addresses_are_handled(addr: Any) -> None:
    e: Endpoint[Any] = Endpoint(IdPrefixAdapter())
    e.receive(pack_header(FLAG_ACK_REQUESTED, 1) + body(b"x"), addr, 0.0)
    e.receive(pack_header(FLAG_ACK_REQUESTED, 1) + body(b"x"), addr, 0.0)
    e.receive(pack_header(FLAG_ACK, 1), addr, 0.0)
    c = e.counters
    assert (c.delivered, c.duplicates, c.unknown_acks) == (1, 1, 1)
    assert accounted(c) and e.inbox[0].addr == addr


@pytest.mark.parametrize("addr", [["10.0.0.1", 53], {"host": "x"}])
async def test_an_unhashable_address_from_a_custom_transport_is_dropped(addr: Any) -> None:
    a, b = await aiodisp.open_memory_pair(IdPrefixAdapter())
    async with a, b:
        b.datagram_received(pack_header(FLAG_ACK_REQUESTED, 1) + body(b"x"), addr)
        s = b.stats
        assert s.received == 1 and accounted(s)
        request = asyncio.create_task(a.request(IdMessage(5), b.local_addr, timeout=5))
        msg, _, src = await b.recv_from(timeout=5)
        await b.notify_unreliable(msg._replace(reply=True), src)
        assert (await request).reply


@pytest.mark.parametrize("framing", ["ack", "raw"])
def test_a_stranger_completing_a_call_with_the_check_off_leaves_no_rtt_trace(
    framing: str,
) -> None:
    e: Endpoint[Any] = Endpoint(IdPrefixAdapter(), framing=framing,  # type: ignore[arg-type]
                                check_source=False)
    peer = ("10.0.0.1", 1000)
    p = e.start_request(IdMessage(1), peer, object(), 0.0, 5.0, RetryPolicy(initial_timeout=1.0))
    reply = body(b"", id=1, reply=True)
    if framing == "ack":
        reply = pack_header(0, 5) + reply
    stranger = ("10.6.6.6", 666)
    assert e.receive(reply, stranger, 0.01) is p  # the check is off: anyone may answer
    assert e.rtt.estimator(stranger) is None  # ...but the RTT measured is the peer's
    assert e.rtt.estimator(peer) is not None
    if framing == "ack":
        n = e.start_notify(IdMessage(2), peer, object(), 0.02, 5.0, None)
        assert e.receive(pack_header(FLAG_ACK, n.packet_id), ["unhashable"], 0.03) is n
    assert accounted(e.counters)
