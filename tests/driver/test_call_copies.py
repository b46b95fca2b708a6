"""request() and the notify call are one algorithm written twice (request() inline, for
speed: see its comment). Both copies go through the same cases here, so they cannot drift:
a failed first send, a transient one, a blocked transport, room among max_pending, close,
and a bad timeout."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

import aiodisp
from aiodisp._core.framing import ack_for, pack_header, unpack_header
from tests.helpers.adapters import FlagAdapter
from tests.helpers.carriers import ScriptedCarrier

PEER = "peer"
ADAPTER = FlagAdapter()
FAST = aiodisp.RetryPolicy(initial_timeout=0.01, backoff=1.0, max_attempts=None, jitter=0.0)

Call = Callable[..., Coroutine[Any, Any, Any]]


def _request(d: aiodisp.Dispatcher[Any], key: int, **kw: Any) -> Coroutine[Any, Any, Any]:
    return d.request((key, b"q", False), PEER, **kw)


def _notify(d: aiodisp.Dispatcher[Any], key: int, **kw: Any) -> Coroutine[Any, Any, Any]:
    return d.notify((key, b"n", False), PEER, **kw)


CALLS = pytest.mark.parametrize("kind", ["request", "notify"])


def call_of(kind: str) -> Call:
    return _request if kind == "request" else _notify


def answer(d: aiodisp.Dispatcher[Any], carrier: ScriptedCarrier, kind: str) -> None:
    """Complete the last call sent: its reply (request) or its ACK (notify)."""
    frame, addr = carrier.sent[-1]
    _flags, packet_id = unpack_header(frame)
    assert carrier.sink is not None
    if kind == "request":
        key = ADAPTER.raw_to_msg(frame[8:])[0]
        reply = pack_header(0, packet_id ^ 1) + ADAPTER.msg_to_raw((key, b"r", True))
        carrier.sink.datagram_received(reply, addr)
    else:
        carrier.sink.datagram_received(ack_for(packet_id), addr)


async def sent(carrier: ScriptedCarrier, count: int) -> None:
    """Let the loop run until ``count`` datagrams went out."""
    async with asyncio.timeout(1.0):
        while len(carrier.sent) < count:
            await asyncio.sleep(0.001)


def counted_calls(d: aiodisp.Dispatcher[Any]) -> int:
    s = d.stats
    return s.requests + s.notifies


async def opened(**options: Any) -> tuple[aiodisp.Dispatcher[Any], ScriptedCarrier]:
    carrier = ScriptedCarrier()
    return aiodisp.Dispatcher(carrier, ADAPTER, **options), carrier


@CALLS
async def test_a_call_completes_by_its_answer(kind: str) -> None:
    d, carrier = await opened()
    async with d:
        task = asyncio.create_task(call_of(kind)(d, 1, timeout=1.0))
        await sent(carrier, 1)
        answer(d, carrier, kind)
        result = await task
        assert result == ((1, b"r", True) if kind == "request" else None)
        assert d.pending == 0 and counted_calls(d) == 1


@CALLS
async def test_a_failed_first_send_raises_and_is_not_counted(kind: str) -> None:
    d, carrier = await opened()
    async with d:
        carrier.mode = "fail"
        with pytest.raises(aiodisp.TransportError, match="cannot send to 'peer'"):
            await call_of(kind)(d, 1, timeout=1.0)
        assert d.pending == 0
        s = d.stats
        assert counted_calls(d) == 0 and s.cancelled == 0 and s.sent == 0


@CALLS
async def test_a_transient_first_send_failure_is_a_loss_the_policy_repairs(kind: str) -> None:
    d, carrier = await opened()
    async with d:
        carrier.mode = "transient"
        task = asyncio.create_task(call_of(kind)(d, 1, timeout=2.0, retry=FAST))
        await asyncio.sleep(0.005)
        assert not task.done() and d.stats.transport_errors >= 1
        carrier.mode = "ok"
        await sent(carrier, 1)
        answer(d, carrier, kind)
        await task
        assert d.pending == 0


@CALLS
async def test_a_blocked_transport_makes_the_call_wait_within_its_timeout(kind: str) -> None:
    d, carrier = await opened(coalesce=False)  # (coalesced: see test_coalesce.py)
    async with d:
        carrier.mode = "blocked"
        with pytest.raises(aiodisp.RequestTimeout) as caught:
            await call_of(kind)(d, 5, timeout=0.05)
        error = caught.value
        assert error.waited_for == "send room" and error.key == 5 and error.attempts == 1
        assert error.addr == PEER and "send queue" in str(error)
        assert d.pending == 0 and d.stats.cancelled == 1


@CALLS
async def test_a_blocked_transport_that_drains_lets_the_call_go_on(kind: str) -> None:
    d, carrier = await opened()
    async with d:
        carrier.mode = "blocked"
        task = asyncio.create_task(call_of(kind)(d, 5, timeout=1.0))
        await asyncio.sleep(0.01)
        assert not task.done()
        carrier.drain()
        answer(d, carrier, kind)
        await task


@CALLS
async def test_a_call_past_max_pending_waits_for_room_within_its_timeout(kind: str) -> None:
    d, carrier = await opened(max_pending=1)
    async with d:
        first = asyncio.create_task(call_of(kind)(d, 1, timeout=1.0))
        await sent(carrier, 1)
        with pytest.raises(aiodisp.RequestTimeout) as caught:
            await call_of(kind)(d, 2, timeout=0.05)
        error = caught.value
        assert error.waited_for == "room" and error.key == 2 and error.attempts == 0
        assert "among the 1 pending calls" in str(error)
        second = asyncio.create_task(call_of(kind)(d, 3, timeout=1.0))
        await asyncio.sleep(0.01)
        assert len(carrier.sent) == 1  # the second waits, unsent
        answer(d, carrier, kind)
        await first
        await sent(carrier, 2)
        answer(d, carrier, kind)
        await second
        assert d.pending == 0


@CALLS
async def test_close_fails_a_waiting_call_and_leaves_nothing(kind: str) -> None:
    d, _carrier = await opened(max_pending=1)
    waiting = asyncio.create_task(call_of(kind)(d, 1, timeout=5.0))
    queued = asyncio.create_task(call_of(kind)(d, 2, timeout=5.0))  # waits for room
    await asyncio.sleep(0.01)
    await d.close()
    for task in (waiting, queued):
        with pytest.raises(aiodisp.DispatcherClosed):
            await task
    assert d.pending == 0
    with pytest.raises(aiodisp.DispatcherClosed):
        await call_of(kind)(d, 3, timeout=1.0)


@CALLS
@pytest.mark.parametrize(
    ("timeout", "error"),
    [(math.nan, ValueError), (-1.0, ValueError), (0, ValueError), (math.inf, ValueError),
     ("1", TypeError), ([], TypeError)],
)
async def test_a_bad_timeout_is_refused_before_anything_is_sent(
    kind: str, timeout: Any, error: type[Exception]
) -> None:
    d, carrier = await opened()
    async with d:
        with pytest.raises(error, match="timeout must be None or"):
            await call_of(kind)(d, 1, timeout=timeout)
        assert carrier.sent == [] and d.pending == 0 and counted_calls(d) == 0


@CALLS
async def test_a_timed_out_call_says_what_it_waited_for(kind: str) -> None:
    d, _carrier = await opened()
    async with d:
        with pytest.raises(aiodisp.RequestTimeout) as caught:
            await call_of(kind)(d, 9, timeout=0.05, retry=FAST)
        error = caught.value
        assert error.waited_for == ("reply" if kind == "request" else "ack")
        assert error.key == 9 and error.addr == PEER and error.attempts > 1
        assert error.elapsed is not None and error.elapsed >= 0.04
        what = "no reply to request 9" if kind == "request" else "no ACK for notify 9"
        assert str(error).startswith(f"{what} from 'peer' after {error.attempts} attempt(s)")


async def test_request_hands_its_accept_to_the_core() -> None:
    """request()'s copy of the call takes one argument the notify call has not: accept=."""
    carrier = ScriptedCarrier()
    d: aiodisp.Dispatcher[Any] = aiodisp.Dispatcher(carrier, ADAPTER)
    call = asyncio.create_task(
        d.request((7, b"q", False), PEER, timeout=5.0, accept=lambda r: r[1] == b"yes")
    )
    await sent(carrier, 1)
    frame, addr = carrier.sent[-1]
    _flags, packet_id = unpack_header(frame)
    assert carrier.sink is not None
    for body in (b"no", b"yes"):
        reply = pack_header(0, packet_id ^ 1) + ADAPTER.msg_to_raw((7, body, True))
        carrier.sink.datagram_received(reply, addr)
        await asyncio.sleep(0)
    assert (await call)[1] == b"yes" and d.stats.unaccepted == 1
    await d.close()
