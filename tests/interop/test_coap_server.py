"""examples/coap.py's server: against libcoap's client, and a retransmitting peer.

The retransmission tests send from a plain UDP socket: the copies are the very
bytes a CoAP client resends when its ACK is late, at a moment the test chooses.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

import aiodisp
from tests.interop.peers import binary, load_example

coap = load_example("coap")

FIRST_WAIT = 0.3
FAST = aiodisp.RetryPolicy(initial_timeout=FIRST_WAIT, backoff=2.0, max_attempts=6,
                          jitter=0.0)
#: The server's CONs wait longer: a test that reads each datagram in turn must not
#: meet a retransmission it did not ask for on a busy machine.
SERVER_RETRY = aiodisp.RetryPolicy(initial_timeout=1.0, backoff=2.0, max_attempts=6,
                                   jitter=0.0)


@pytest.fixture
async def server() -> AsyncIterator[Any]:
    srv = await coap.CoapServer.open(("127.0.0.1", 0), slow=["slow"], delay=0.05,
                                     retry=SERVER_RETRY)
    srv.resources.update({"hello": b"world", "slow": b"late", "obs": b"v1"})
    task = asyncio.create_task(srv.serve())
    try:
        yield srv
    finally:
        await srv.close()
        await task


@pytest.fixture
def peer() -> Any:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.setblocking(False)
        yield s


async def recv(sock: socket.socket, timeout: float = 5.0) -> bytes:
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(timeout):
        return await loop.sock_recv(sock, 65535)


async def nothing_more(sock: socket.socket, wait: float = 0.2) -> bool:
    try:
        await recv(sock, wait)
    except TimeoutError:
        return True
    return False


async def test_a_retransmitted_con_reaches_the_handler_once_and_gets_the_same_bytes(
    server: Any, peer: socket.socket
) -> None:
    request = coap.encode(coap.CoapMessage(coap.CON, coap.GET, 0x1234, b"tok1",
                                           coap.path_options("hello")))
    peer.sendto(request, server.local_addr)
    first = await recv(peer)
    peer.sendto(request, server.local_addr)  # our "ACK" was late: the client resends
    second = await recv(peer)
    assert first == second  # the cached response, byte for byte
    response = coap.decode(first)
    assert response.mtype == coap.ACK and response.mid == 0x1234 and response.payload == b"world"
    assert server.handled == 1
    stats = server.dispatcher.stats
    assert stats.delivered == 1 and stats.duplicates == 1 and stats.replies_resent == 1


async def test_a_retransmitted_con_of_a_separate_exchange_runs_the_handler_once(
    server: Any, peer: socket.socket
) -> None:
    request = coap.encode(coap.CoapMessage(coap.CON, coap.GET, 0x2345, b"tok2",
                                           coap.path_options("slow")))
    peer.sendto(request, server.local_addr)
    ack = coap.decode(await recv(peer))
    assert (ack.mtype, ack.code, ack.mid) == (coap.ACK, coap.EMPTY, 0x2345)  # ack_for, at once
    peer.sendto(request, server.local_addr)  # a copy before the response: ACKed again
    again = coap.decode(await recv(peer))
    assert (again.mtype, again.mid) == (coap.ACK, 0x2345)
    response_bytes = await recv(peer)
    response = coap.decode(response_bytes)
    assert response.mtype == coap.CON and response.token == b"tok2" and response.payload == b"late"
    peer.sendto(request, server.local_addr)  # a copy after it: the ACK and the same response
    assert coap.decode(await recv(peer)).mtype == coap.ACK
    assert await recv(peer) == response_bytes
    peer.sendto(coap.encode(coap.CoapMessage(coap.ACK, coap.EMPTY, response.mid)),
                server.local_addr)  # now ACK the separate response: the server stops
    deadline = time.monotonic() + 5
    while server.dispatcher.pending and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    assert server.handled == 1 and server.dispatcher.pending == 0  # nothing left to resend
    assert await nothing_more(peer, FIRST_WAIT)


async def test_an_unacked_separate_response_is_retransmitted(
    server: Any, peer: socket.socket
) -> None:
    request = coap.encode(coap.CoapMessage(coap.CON, coap.GET, 0x3456, b"tok3",
                                           coap.path_options("slow")))
    peer.sendto(request, server.local_addr)
    await recv(peer)  # the empty ACK
    first = await recv(peer)
    second = await recv(peer, 5.0)  # not ACKed: resent after SERVER_RETRY's 1 s
    assert first == second and coap.decode(first).mtype == coap.CON
    peer.sendto(coap.encode(coap.CoapMessage(coap.RST, coap.EMPTY, coap.decode(first).mid)),
                server.local_addr)  # a RST ends it too
    deadline = time.monotonic() + 5
    while server.dispatcher.pending and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    assert server.dispatcher.stats.rejected == 1


async def test_twenty_concurrent_pings_are_answered_without_the_handler(server: Any) -> None:
    async with await coap.CoapClient.open(("127.0.0.1", 0), retry=FAST) as c:
        rtts = await asyncio.gather(*(c.ping(server.local_addr) for _ in range(20)))
    assert len(rtts) == 20
    stats = server.dispatcher.stats
    assert stats.ignored == 20 and stats.acks_sent == 20 and stats.delivered == 0
    assert server.handled == 0


async def test_the_aiodisp_client_and_server_speak_get_put_non_and_separate(server: Any) -> None:
    async with await coap.CoapClient.open(("127.0.0.1", 0), retry=FAST) as c:
        assert (await c.get(server.local_addr, "hello")).payload == b"world"
        assert (await c.get(server.local_addr, "hello", confirmable=False)).payload == b"world"
        assert (await c.put(server.local_addr, "new", b"1")).code == coap.CREATED
        assert (await c.put(server.local_addr, "new", b"2")).code == coap.CHANGED
        late = await c.get(server.local_addr, "slow")
        with pytest.raises(coap.CoapError, match=r"4\.04"):
            await c.get(server.local_addr, "missing")
        stats = c.dispatcher.stats
    assert late.mtype == coap.CON and late.payload == b"late"
    assert stats.acks_received == 1 and stats.acks_sent == 1 and stats.retransmissions == 0


# ---------------------------------------------------------------------- libcoap's client


async def coap_client(*args: str, timeout: float = 20.0) -> str:
    exe = binary("coap-client-notls", "libcoap3-bin")
    proc = await asyncio.create_subprocess_exec(
        exe, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        stdin=asyncio.subprocess.DEVNULL,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    assert proc.returncode == 0, out
    return out.decode(errors="replace")


async def test_libcoap_client_gets_and_puts(server: Any) -> None:
    host, port = server.local_addr[:2]
    base = f"coap://{host}:{port}"
    assert (await coap_client("-m", "get", f"{base}/hello")).strip() == "world"
    await coap_client("-m", "put", "-e", "from libcoap", f"{base}/store")
    assert server.resources["store"] == b"from libcoap"
    assert (await coap_client("-N", "-m", "get", f"{base}/store")).strip() == "from libcoap"
    assert (await coap_client("-m", "get", f"{base}/slow")).strip() == "late"  # separate


async def test_server_initiated_con_notify_completes_on_libcoaps_ack(server: Any) -> None:
    """libcoap's client observes ``/obs``; the CON notification's notify() ends on its ACK."""
    exe = binary("coap-client-notls", "libcoap3-bin")
    host, port = server.local_addr[:2]
    proc = await asyncio.create_subprocess_exec(
        exe, "-s", "10", "-m", "get", f"coap://{host}:{port}/obs",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        stdin=asyncio.subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while not server.observers.get("obs") and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert server.observers.get("obs"), "libcoap's client did not register"
        start = time.monotonic()
        assert await asyncio.wait_for(server.push("obs", b"v2"), 10.0) == 1
        assert time.monotonic() - start < 5.0
        assert server.dispatcher.stats.acks_received >= 1
    finally:
        proc.terminate()
        out, _ = await proc.communicate()
    assert b"v1" in out and b"v2" in out
