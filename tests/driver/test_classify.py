"""The message layer through the Dispatcher, over real loopback UDP with raw framing.

The peer is a plain UDP socket speaking tests.helpers.two_layer's messages, so
each test chooses exactly what comes back and when.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

import aiodisp
from tests.helpers.adapters import KeyAdapter
from tests.helpers.two_layer import TwoLayerAdapter

pytestmark = pytest.mark.both_loops

ADAPTER = TwoLayerAdapter()
QUICK = aiodisp.RetryPolicy(initial_timeout=0.05, backoff=2.0, max_attempts=20, jitter=0.0)


@pytest.fixture
async def d() -> AsyncIterator[aiodisp.Dispatcher[Any]]:
    async with await aiodisp.open_udp(TwoLayerAdapter(), ("127.0.0.1", 0),
                                      framing="raw") as dispatcher:
        yield dispatcher


@pytest.fixture
def peer() -> Iterator[socket.socket]:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.settimeout(5.0)
        yield s


async def recv(sock: socket.socket) -> tuple[Any, Any]:
    """The next datagram the peer gets (in a thread: uvloop has no sock_recvfrom)."""
    data, addr = await asyncio.to_thread(sock.recvfrom, 65535)
    return ADAPTER.raw_to_msg(data), addr


def send(sock: socket.socket, msg: Any, addr: Any) -> None:
    sock.sendto(ADAPTER.msg_to_raw(msg), addr)


async def until(condition: Any, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.005)


async def test_a_reject_fails_the_request_at_once(
    d: aiodisp.Dispatcher[Any], peer: socket.socket
) -> None:
    call = asyncio.create_task(
        d.request(("M", 5, 9, b"q"), peer.getsockname(), timeout=30.0, retry=QUICK)
    )
    _msg, client = await recv(peer)
    send(peer, ("X", 5, 0, b"refused"), client)
    with pytest.raises(aiodisp.PeerRejected) as caught:
        await asyncio.wait_for(call, 5.0)
    assert caught.value.msg == ("X", 5, 0, b"refused") and caught.value.key == 9
    assert isinstance(caught.value, aiodisp.DispatchError)
    assert d.pending == 0 and d.stats.rejected == 1


async def test_an_ack_stops_retransmission_and_the_reply_still_completes(
    d: aiodisp.Dispatcher[Any], peer: socket.socket
) -> None:
    call = asyncio.create_task(
        d.request(("M", 5, 9, b"q"), peer.getsockname(), timeout=30.0, retry=QUICK)
    )
    _msg, client = await recv(peer)
    send(peer, ("A", 5, 0, b""), client)
    await until(lambda: d.stats.acks_received == 1)
    retransmitted = d.stats.retransmissions
    await asyncio.sleep(0.3)  # QUICK would have resent three more times by now
    assert d.stats.retransmissions == retransmitted and not call.done()
    send(peer, ("R", 77, 9, b"separate"), client)
    assert await asyncio.wait_for(call, 5.0) == ("R", 77, 9, b"separate")
    assert (await recv(peer))[0] == ("A", 77, 0, b"")  # the separate reply, ACKed
    assert d.stats.retransmissions == retransmitted


async def test_every_copy_of_a_late_reply_is_acked_so_the_peer_stops(
    d: aiodisp.Dispatcher[Any], peer: socket.socket
) -> None:
    call = asyncio.create_task(d.request(("M", 5, 9, b"q"), peer.getsockname(), timeout=5.0))
    _msg, client = await recv(peer)
    for _ in range(3):  # the reply, and two copies of it resent by the peer
        send(peer, ("R", 77, 9, b"r"), client)
        assert (await recv(peer))[0] == ("A", 77, 0, b"")
    assert (await call)[3] == b"r"
    stats = d.stats
    assert stats.replies_matched == 1 and stats.unknown_replies == 2 and stats.acks_sent == 3


async def test_notify_over_raw_framing_retransmits_until_the_peers_ack(
    d: aiodisp.Dispatcher[Any], peer: socket.socket
) -> None:
    call = asyncio.create_task(
        d.notify(("M", 8, 1, b"note"), peer.getsockname(), timeout=10.0, retry=QUICK)
    )
    first, client = await recv(peer)
    second, _ = await recv(peer)  # not ACKed: sent again
    assert first == second == ("M", 8, 1, b"note")
    send(peer, ("A", 8, 0, b""), client)
    await asyncio.wait_for(call, 5.0)
    assert d.stats.acks_received == 1 and d.stats.retransmissions >= 1 and d.pending == 0


async def test_notify_over_raw_framing_is_failed_by_a_reject(
    d: aiodisp.Dispatcher[Any], peer: socket.socket
) -> None:
    call = asyncio.create_task(d.notify(("M", 8, 1, b"n"), peer.getsockname(), timeout=10.0))
    _msg, client = await recv(peer)
    send(peer, ("X", 8, 0, b""), client)
    with pytest.raises(aiodisp.PeerRejected):
        await asyncio.wait_for(call, 5.0)


async def test_notify_over_raw_udp_without_a_message_layer_is_refused() -> None:
    async with await aiodisp.open_udp(KeyAdapter(), ("127.0.0.1", 0), framing="raw") as d:
        with pytest.raises(aiodisp.ReliabilityUnavailable):
            await d.notify((1, b"x"), d.local_addr)


async def test_a_dropped_kind_is_ignored_answered_and_never_queued(
    d: aiodisp.Dispatcher[Any], peer: socket.socket
) -> None:
    send(peer, ("D", 4, 0, b"ping"), d.local_addr)
    assert await recv(peer) == (("A", 4, 0, b""), d.local_addr)
    with pytest.raises(aiodisp.RequestTimeout):
        await d.recv_from(timeout=0.1)
    assert d.stats.ignored == 1 and d.stats.delivered == 0


async def test_a_served_copy_runs_the_plain_handler_once_and_gets_the_same_bytes(
    peer: socket.socket,
) -> None:
    calls: list[Any] = []

    def handler(msg: Any, addr: Any) -> Any:
        calls.append(msg)
        return ("R", msg[1], msg[2], b"answer")  # piggybacked: the same transaction key

    async with await aiodisp.open_udp(TwoLayerAdapter(piggyback=True), ("127.0.0.1", 0),
                                      framing="raw") as server:
        task = asyncio.create_task(server.serve(handler))
        raw = ADAPTER.msg_to_raw(("M", 3, 3, b"q"))
        peer.sendto(raw, server.local_addr)
        first = await asyncio.to_thread(peer.recv, 65535)
        peer.sendto(raw, server.local_addr)
        second = await asyncio.to_thread(peer.recv, 65535)
        assert first == second and len(calls) == 1
        assert server.stats.duplicates == 1 and server.stats.replies_resent == 1
    await task


async def test_accept_refuses_a_reply_and_the_request_keeps_waiting(
    d: aiodisp.Dispatcher[Any], peer: socket.socket
) -> None:
    call = asyncio.create_task(
        d.request(("M", 5, 9, b"q"), peer.getsockname(), timeout=5.0,
                  accept=lambda reply: reply[3] == b"good")
    )
    _msg, client = await recv(peer)
    send(peer, ("R", 70, 9, b"bad"), client)
    await until(lambda: d.stats.unaccepted == 1)
    assert not call.done()
    send(peer, ("R", 71, 9, b"good"), client)
    assert (await call)[3] == b"good"


async def test_send_nowait_sends_once_from_plain_code(
    d: aiodisp.Dispatcher[Any], peer: socket.socket
) -> None:
    d.send_nowait(("M", None, 1, b"line"), peer.getsockname())
    assert (await recv(peer))[0] == ("M", None, 1, b"line")
    with pytest.raises(aiodisp.TransportError):
        d.send_nowait(("M", None, 1, b"x"), ["not", "hashable"])
    with pytest.raises(aiodisp.AdapterError):
        d.send_nowait(("M", None, "no key", b"x"), peer.getsockname())
    await d.close()
    with pytest.raises(aiodisp.DispatcherClosed):
        d.send_nowait(("M", None, 1, b"x"), peer.getsockname())


async def test_a_cancelled_call_leaves_nothing_behind(
    d: aiodisp.Dispatcher[Any], peer: socket.socket
) -> None:
    call = asyncio.create_task(d.request(("M", 5, 9, b"q"), peer.getsockname(), timeout=5.0))
    await recv(peer)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    layer = d._core.layer
    assert layer is not None and not layer.by_tx and d.pending == 0
