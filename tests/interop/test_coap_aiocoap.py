"""examples/coap.py against aiocoap, both ways: aiodisp's client to an aiocoap
server, and aiocoap's client to aiodisp's server.

aiocoap's server answers a quick handler piggybacked, and a handler slower than
its empty-ACK delay with an empty ACK and then a separate response (a CON it
retransmits until ACKed). It resets a CON response nobody asked for. Its client
ACKs CON responses and CON notifications (Observe).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

import aiodisp
from tests.interop.peers import free_port, load_example

aiocoap = pytest.importorskip("aiocoap", reason="aiocoap is in the dev extra")
resource = pytest.importorskip("aiocoap.resource")
Resource: Any = resource.Resource

coap = load_example("coap")

FAST = aiodisp.RetryPolicy(initial_timeout=0.3, backoff=2.0, max_attempts=6, jitter=0.0)


class Text(Resource):  # type: ignore[misc]
    def __init__(self, body: bytes, delay: float = 0.0) -> None:
        super().__init__()
        self.body = body
        self.delay = delay

    async def render_get(self, request: Any) -> Any:
        if self.delay:
            await asyncio.sleep(self.delay)
        return aiocoap.Message(code=aiocoap.CONTENT, payload=self.body)

    async def render_put(self, request: Any) -> Any:
        self.body = request.payload
        return aiocoap.Message(code=aiocoap.CHANGED)


@pytest.fixture
async def aiocoap_server() -> AsyncIterator[tuple[str, int]]:
    logging.getLogger("coap-server").setLevel(logging.CRITICAL)
    site = resource.Site()
    site.add_resource(["hello"], Text(b"world"))
    site.add_resource(["slow"], Text(b"worth the wait", delay=0.6))
    port = free_port()
    ctx = await aiocoap.Context.create_server_context(site, bind=("127.0.0.1", port))
    try:
        yield "127.0.0.1", port
    finally:
        await ctx.shutdown()


# ---------------------------------------------------------------------- aiodisp -> aiocoap


async def test_get_and_put_against_aiocoap(aiocoap_server: tuple[str, int]) -> None:
    async with await coap.CoapClient.open(("127.0.0.1", 0), retry=FAST) as c:
        assert (await c.get(aiocoap_server, "hello")).payload == b"world"
        assert (await c.put(aiocoap_server, "hello", b"there")).code == coap.CHANGED
        non = await c.get(aiocoap_server, "hello", confirmable=False)
    assert non.payload == b"there" and non.mtype == coap.NON


async def test_twenty_concurrent_pings_to_aiocoap(aiocoap_server: tuple[str, int]) -> None:
    async with await coap.CoapClient.open(("127.0.0.1", 0), retry=FAST) as c:
        rtts = await asyncio.gather(*(c.ping(aiocoap_server) for _ in range(20)))
        stats = c.dispatcher.stats
    assert len(rtts) == 20 and all(rtt < 5.0 for rtt in rtts)
    assert stats.rejected == 20 and stats.timeouts == 0 and c.dispatcher.pending == 0


async def test_rst_from_aiocoap_fails_the_request_at_once(aiocoap_server: tuple[str, int]) -> None:
    async with await coap.CoapClient.open(("127.0.0.1", 0), retry=FAST) as c:
        # a CON carrying a response code: aiocoap expects no such thing and resets it
        stray = coap.CoapMessage(coap.CON, coap.CONTENT, 777, b"\x07\x07", (), b"?")
        start = time.monotonic()
        with pytest.raises(aiodisp.PeerRejected) as caught:
            await c.dispatcher.request(stray, aiocoap_server, timeout=30.0, retry=FAST)
        assert time.monotonic() - start < 5.0
    assert caught.value.msg.mtype == coap.RST and caught.value.msg.mid == 777


async def test_empty_ack_from_aiocoap_stops_retransmission(
    aiocoap_server: tuple[str, int],
) -> None:
    # aiocoap ACKs after 0.1 s; the first retransmission would be due at 0.45 s
    patient = aiodisp.RetryPolicy(initial_timeout=0.45, backoff=2.0, max_attempts=6,
                                  jitter=0.0)
    async with await coap.CoapClient.open(("127.0.0.1", 0), retry=patient) as c:
        request = c.message(coap.GET, "slow")
        response = await c.request(request, aiocoap_server)
        stats = c.dispatcher.stats
    assert response.payload == b"worth the wait"
    assert response.mtype == coap.CON and response.mid != request.mid  # separate
    # aiocoap's empty ACK came before our first retransmission and stopped it
    assert stats.acks_received == 1 and stats.retransmissions == 0
    assert stats.acks_sent == 1  # the separate response, ACKed


# ---------------------------------------------------------------------- aiocoap -> aiodisp


@pytest.fixture
async def server() -> AsyncIterator[Any]:
    srv = await coap.CoapServer.open(("127.0.0.1", 0), slow=["slow"], delay=0.05, retry=FAST)
    srv.resources.update({"hello": b"world", "slow": b"late", "obs": b"v1"})
    task = asyncio.create_task(srv.serve())
    try:
        yield srv
    finally:
        await srv.close()
        await task


@pytest.fixture
async def aiocoap_client() -> AsyncIterator[Any]:
    logging.getLogger("coap").setLevel(logging.CRITICAL)
    ctx = await aiocoap.Context.create_client_context()
    try:
        yield ctx
    finally:
        await ctx.shutdown()


def uri(srv: Any, path: str) -> str:
    host, port = srv.local_addr[:2]
    return f"coap://{host}:{port}/{path}"


async def test_aiocoap_gets_and_puts_from_an_aiodisp_server(
    server: Any, aiocoap_client: Any
) -> None:
    got = await aiocoap_client.request(aiocoap.Message(code=aiocoap.GET, uri=uri(server, "hello"))
                                       ).response
    assert got.code == aiocoap.CONTENT and got.payload == b"world"
    put = await aiocoap_client.request(
        aiocoap.Message(code=aiocoap.PUT, uri=uri(server, "new"), payload=b"42")
    ).response
    assert put.code == aiocoap.CREATED and server.resources["new"] == b"42"


async def test_aiocoap_gets_a_separate_response_and_acks_it(
    server: Any, aiocoap_client: Any
) -> None:
    got = await aiocoap_client.request(aiocoap.Message(code=aiocoap.GET, uri=uri(server, "slow"))
                                       ).response
    assert got.payload == b"late"
    stats = server.dispatcher.stats
    # the empty ACK went out at once (ack_for), the response as a CON that aiocoap ACKed
    assert stats.acks_sent == 1
    deadline = time.monotonic() + 5
    while server.dispatcher.stats.acks_received < 1 and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    assert server.dispatcher.stats.acks_received == 1 and server.dispatcher.pending == 0


async def test_server_initiated_con_notify_completes_on_aiocoaps_ack(
    server: Any, aiocoap_client: Any
) -> None:
    """Observe (RFC 7641): the notification is a CON sent with notify(); aiocoap ACKs it."""
    request = aiocoap_client.request(
        aiocoap.Message(code=aiocoap.GET, uri=uri(server, "obs"), observe=0)
    )
    first = await request.response
    assert first.payload == b"v1"
    notifications = aiter(request.observation)
    assert await asyncio.wait_for(server.push("obs", b"v2"), 5.0) == 1  # the ACK came
    second = await asyncio.wait_for(anext(notifications), 5.0)
    assert second.payload == b"v2"
    assert server.dispatcher.stats.acks_received == 1
    request.observation.cancel()
