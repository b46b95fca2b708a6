"""Property-based fuzzing of the receive path: any bytes, any adapter failure, never fatal.

Three levels:

* the sans-I/O :class:`Endpoint` fed arbitrary datagrams from arbitrary addresses
  (no loop needed): it never raises and every datagram lands in one counter;
* the same Endpoint as a state machine: requests, notifies, genuine and forged
  replies and ACKs, garbage, time passing, cancellation, in any order; a call is
  completed only by its own peer, tables stay within their bounds;
* a real dispatcher on loopback UDP, hit by arbitrary datagrams while its
  adapter fails in arbitrary ways: no exception reaches the event loop, and a
  normal request afterwards still succeeds.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

import aiodisp
from aiodisp import RetryPolicy
from aiodisp._core.endpoint import Endpoint, Pending
from aiodisp._core.framing import FLAG_ACK, FLAG_ACK_REQUESTED, HEADER_SIZE, pack_header
from aiodisp.adapters import IdMessage, IdPrefixAdapter
from tests.helpers.adapters import KeyAdapter
from tests.helpers.flood import accounted, send_paced

# ---------------------------------------------------------------------- adapters that fail

#: Ways an adapter can misbehave on receive; chosen by the payload of the message.
FAULTS = (
    "raise", "raise-own", "recursion", "return-none", "return-int", "key-unhashable",
    "key-raises", "key-nan", "is-reply-raises", "is-reply-junk", "is-reply-str",
)


class OwnError(Exception):
    pass


class Poison:
    """A message raw_to_msg returns for a fault that bites later (in msg_key or is_reply)."""

    def __init__(self, fault: str) -> None:
        self.fault = fault


class NoBool:
    def __bool__(self) -> bool:
        raise OwnError("no truth value")


class FaultyAdapter(IdPrefixAdapter):
    """IdPrefixAdapter that misbehaves while ``armed`` when a payload names a fault."""

    def __init__(self) -> None:
        self.armed = True

    def raw_to_msg(self, raw: bytes) -> Any:
        msg = super().raw_to_msg(raw)
        if not self.armed:
            return msg
        fault = msg.payload.decode("latin-1")
        if fault == "raise":
            raise ValueError("bad bytes")
        if fault == "raise-own":
            raise OwnError("the adapter's own failure")
        if fault == "recursion":
            raise RecursionError("too deep")
        if fault == "return-none":
            return None
        if fault == "return-int":
            return 7
        if fault in FAULTS:
            return Poison(fault)
        return msg

    def msg_key(self, msg: Any) -> Any:
        if isinstance(msg, Poison):
            if msg.fault == "key-unhashable":
                return [1, 2]
            if msg.fault == "key-raises":
                raise KeyError("no key")
            if msg.fault == "key-nan":
                return float("nan")
            return 1
        return super().msg_key(msg)

    def is_reply(self, msg: Any) -> Any:
        if isinstance(msg, Poison):
            if msg.fault == "is-reply-raises":
                raise OwnError("cannot tell")
            if msg.fault == "is-reply-junk":
                return NoBool()
            return "yes"  # truthy junk: treated as a reply
        return super().is_reply(msg)


# ---------------------------------------------------------------------- strategies

# Odd address forms a custom transport might report, unhashable ones included.
ADDRESSES = st.one_of(
    st.lists(st.integers(), max_size=2),
    st.tuples(st.sampled_from(["127.0.0.1", "10.0.0.1"]), st.integers(0, 65535)),
    st.tuples(st.just("::1"), st.integers(0, 65535), st.integers(0, 3), st.integers(0, 3)),
    st.none(),
    st.text(max_size=20),
    st.binary(max_size=20),
    st.integers(),
)

bodies = st.builds(
    lambda id_, reply, payload: IdPrefixAdapter().msg_to_raw(IdMessage(id_, payload, reply)),
    st.integers(0, 4),
    st.booleans(),
    st.one_of(st.binary(max_size=20), st.sampled_from([f.encode() for f in FAULTS])),
)

headers = st.builds(pack_header, st.integers(0, 255), st.integers(0, (1 << 56) - 1))

datagrams = st.one_of(
    st.binary(max_size=200),
    st.builds(bytes.__add__, headers, st.binary(max_size=40)),
    st.builds(bytes.__add__, headers, bodies),
    st.builds(bytes.__add__, st.builds(pack_header, st.sampled_from([0, 1, 2]),
                                       st.integers(0, 8)), bodies),
    bodies,
)


# ---------------------------------------------------------------------- 1. Endpoint, stateless


@settings(max_examples=300, deadline=None)
@given(
    framing=st.sampled_from(["ack", "raw"]),
    with_is_reply=st.booleans(),
    check_source=st.booleans(),
    traffic=st.lists(st.tuples(datagrams, ADDRESSES), max_size=60),
)
def test_endpoint_survives_any_datagram_from_any_address(
    framing: str, with_is_reply: bool, check_source: bool, traffic: list[tuple[bytes, Any]]
) -> None:
    adapter: Any = FaultyAdapter() if with_is_reply else KeyAdapter()
    e: Endpoint[Any] = Endpoint(adapter, framing=framing, max_datagram_size=128,  # type: ignore[arg-type]
                                max_queue=8, check_source=check_source,
                                dedup_capacity=16)
    peer = ("127.0.0.1", 9)
    pending = {
        key: e.start_request(
            IdMessage(key) if with_is_reply else (key, b""), peer, object(), 0.0, 10.0, None)
        for key in (1, 2)
    }
    for now, (data, addr) in enumerate(traffic):
        done = e.receive(data, addr, now * 0.01)
        if done is not None:
            assert done in pending.values() and done.done
            assert not check_source or addr == peer
        assert len(e.inbox) <= 8 and len(e.log) <= 16
        for out, _ in e.outbox:
            assert len(out) == HEADER_SIZE and out[0] == FLAG_ACK  # only ACKs, 8 bytes
        e.outbox.clear()
    c = e.counters
    assert c.received == len(traffic) and accounted(c)


# ---------------------------------------------------------------------- 2. Endpoint, stateful

PEERS = (("10.0.0.1", 1000), ("10.0.0.2", 2000))
EVIL = ("10.6.6.6", 666)
ALL_ADDRS = (*PEERS, EVIL, None, "/tmp/unix.sock", ("::1", 7, 0, 0))
POLICIES = (None, RetryPolicy(initial_timeout=0.05, max_attempts=4),
            RetryPolicy(initial_timeout=None, max_attempts=None, jitter=0.0))


class EndpointUnderAttack(RuleBasedStateMachine):
    """A client endpoint with calls in flight, while peers and an attacker send anything."""

    notifies = Bundle("notifies")

    @initialize(check_source=st.booleans(), framing=st.sampled_from(["ack", "raw"]))
    def start(self, check_source: bool, framing: str) -> None:
        self.adapter = FaultyAdapter()
        self.e: Endpoint[Any] = Endpoint(
            self.adapter, framing=framing, max_queue=4, check_source=check_source,  # type: ignore[arg-type]
            max_datagram_size=256, dedup_ttl=1.0, dedup_capacity=8,
        )
        self.now = 0.0
        self.requests: dict[int, Pending] = {}
        self.acking: dict[int, Pending] = {}
        self.next_pid = 1 << 40

    def _pid(self) -> int:
        self.next_pid += 1
        return self.next_pid

    def _frame(self, body: bytes, flags: int = 0) -> bytes:
        return pack_header(flags, self._pid()) + body if self.e.ack else body

    def _finished(self, p: Pending | None) -> None:
        if p is None:
            return
        assert p.done
        if self.requests.get(p.key) is p:  # type: ignore[call-overload]
            del self.requests[p.key]
        self.acking.pop(p.packet_id, None)

    # -- calls

    @rule(key=st.integers(0, 4), peer=st.sampled_from(PEERS), policy=st.sampled_from(POLICIES),
          timeout=st.floats(0.01, 5.0))
    def request(self, key: int, peer: Any, policy: RetryPolicy | None, timeout: float) -> None:
        if key in self.requests:
            return
        p = self.e.start_request(IdMessage(key, b"q"), peer, object(), self.now, timeout, policy)
        self.requests[key] = p
        self.e.outbox.clear()

    @precondition(lambda self: self.e.ack)
    @rule(target=notifies, peer=st.sampled_from(PEERS), timeout=st.floats(0.01, 5.0))
    def notify(self, peer: Any, timeout: float) -> int:
        p = self.e.start_notify(IdMessage(9, b"n"), peer, object(), self.now, timeout,
                                POLICIES[1])
        self.acking[p.packet_id] = p
        return p.packet_id

    # -- what arrives

    @rule(key=st.integers(0, 4), flags=st.sampled_from([0, FLAG_ACK_REQUESTED]))
    def genuine_reply(self, key: int, flags: int) -> None:
        p = self.requests.get(key)
        if p is None:
            return
        before = self.e.counters.replies_matched
        done = self.e.receive(
            self._frame(self.adapter.msg_to_raw(IdMessage(key, b"r", True)), flags),
            p.addr, self.now)
        assert done is p and p.result == IdMessage(key, b"r", True)
        assert self.e.counters.replies_matched == before + 1
        self._finished(done)
        self.e.outbox.clear()

    @rule(key=st.integers(0, 4), src=st.sampled_from((*PEERS, EVIL)),
          flags=st.sampled_from([0, FLAG_ACK_REQUESTED]))
    def forged_reply(self, key: int, src: Any, flags: int) -> None:
        p = self.requests.get(key)
        if p is None or p.addr == src:
            return
        before = self.e.counters.snapshot()
        done = self.e.receive(
            self._frame(self.adapter.msg_to_raw(IdMessage(key, b"forged", True)), flags),
            src, self.now)
        if self.e.check_source:
            assert done is None and not p.done
            assert self.e.counters.wrong_source == before.wrong_source + 1
            assert not self.e.outbox  # no ACK, nothing reflected to the forger
        else:
            assert done is p  # the knob is off: whoever knows the key answers
            self._finished(done)
        self.e.outbox.clear()

    @rule(pid=notifies, src=st.sampled_from((*PEERS, EVIL)))
    def ack(self, pid: int, src: Any) -> None:
        p = self.acking.get(pid)
        done = self.e.receive(pack_header(FLAG_ACK, pid), src, self.now)
        if p is not None and (src == p.addr or not self.e.check_source):
            assert done is p
            self._finished(done)
        else:
            assert done is None

    @precondition(lambda self: self.e.ack)
    @rule(pid=st.integers(0, (1 << 56) - 1), src=st.sampled_from(ALL_ADDRS))
    def random_ack(self, pid: int, src: Any) -> None:
        p = self.acking.get(pid)
        done = self.e.receive(pack_header(FLAG_ACK, pid), src, self.now)
        if done is not None:
            assert done is p and (src == p.addr or not self.e.check_source)
            self._finished(done)

    @rule(data=datagrams, src=st.sampled_from(ALL_ADDRS), armed=st.booleans())
    def anything(self, data: bytes, src: Any, armed: bool) -> None:
        self.adapter.armed = armed
        try:
            done = self.e.receive(data, src, self.now)
        finally:
            self.adapter.armed = True
        if done is not None:
            # Only a well-formed reply from the right peer (or an ACK) can complete a call.
            assert done.addr == src or not self.e.check_source
            if done.kind == 0:
                assert self.adapter.msg_key(done.result) == done.key
            self._finished(done)
        self.e.outbox.clear()

    # -- time and the application

    @rule(dt=st.floats(0.0, 2.0))
    def time_passes(self, dt: float) -> None:
        self.now += dt
        for p in self.e.handle_timer(self.now):
            assert p.deadline <= self.now or (
                p.policy is not None and p.attempts == p.policy.max_attempts
            )
            self._finished(p)
        self.e.outbox.clear()

    @rule(key=st.integers(0, 4))
    def cancel(self, key: int) -> None:
        p = self.requests.pop(key, None)
        if p is not None:
            self.e.cancel(p)

    @rule()
    def app_reads(self) -> None:
        if self.e.inbox:
            self.e.inbox.popleft()  # consumed: the core derives it

    # -- invariants

    @invariant()
    def every_datagram_is_accounted_for(self) -> None:
        assert accounted(self.e.counters)

    @invariant()
    def tables_match_the_calls_in_flight(self) -> None:
        assert set(self.e.waiting) == set(self.requests)
        assert set(self.e.acking) == set(self.acking)
        assert self.e.pending_count == len(self.requests) + len(self.acking)
        if self.e.pending_count:
            assert self.e.next_deadline() is not None  # every call will end

    @invariant()
    def bounded(self) -> None:
        assert len(self.e.inbox) <= 4
        assert len(self.e.log) <= 8 and self.e.log.replies_indexed <= len(self.e.log)


EndpointUnderAttack.TestCase.settings = settings(
    max_examples=150, stateful_step_count=40, deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_endpoint_state_machine_under_attack = EndpointUnderAttack.TestCase


# ---------------------------------------------------------------------- 3. real dispatcher


async def _attack_then_request(traffic: list[bytes]) -> None:
    loop = asyncio.get_running_loop()
    loop_errors: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _, context: loop_errors.append(context))
    adapter = FaultyAdapter()
    victim = await aiodisp.open_udp(adapter, ("127.0.0.1", 0), max_datagram_size=256, max_queue=8)
    server = await aiodisp.open_udp(IdPrefixAdapter(), ("127.0.0.1", 0))
    attacker = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    attacker.bind(("127.0.0.1", 0))

    async def serve() -> None:
        async for msg, _, addr in server:
            if not msg.reply:
                await server.notify_unreliable(msg._replace(reply=True), addr)

    serving = asyncio.create_task(serve())
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))
    # A request is pending while the attack runs (key 1: the attacker's favourite).
    pending = asyncio.create_task(
        victim.request(IdMessage(1, b"q"), silent.getsockname(), timeout=30))
    try:
        await asyncio.sleep(0)
        await send_paced(attacker, traffic, victim.local_addr, lambda: victim.stats.received,
                         chunk=32)
        s = victim.stats
        assert s.received == len(traffic) and accounted(s)
        assert not pending.done()  # nothing from the attacker completed it
        adapter.armed = False
        reply = await victim.request(IdMessage(3, b"after"), server.local_addr, timeout=5,
                                     retry=RetryPolicy(initial_timeout=0.2))
        assert reply == IdMessage(3, b"after", True)
        assert not loop_errors, loop_errors
    finally:
        pending.cancel()
        await asyncio.gather(pending, return_exceptions=True)
        attacker.close()
        silent.close()
        await victim.close()
        await server.close()
        await asyncio.gather(serving, return_exceptions=True)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(traffic=st.lists(datagrams, max_size=80))
def test_dispatcher_survives_any_datagrams_and_adapter_failures_over_udp(
    traffic: list[bytes],
) -> None:
    asyncio.run(_attack_then_request(traffic))
