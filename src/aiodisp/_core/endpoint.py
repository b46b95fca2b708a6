"""The protocol state of one dispatcher, with no I/O.

:class:`Endpoint` turns outgoing messages into datagrams, incoming datagrams
into deliveries and completions, and the passing of time into retransmissions
and timeouts. Every entry point takes ``now`` (seconds, any monotonic clock);
what must be sent is appended to :attr:`Endpoint.outbox` as ``(datagram, addr)``
pairs; messages for the application are appended to :attr:`Endpoint.inbox`.
The driver tells it the time, sends the outbox and wakes whoever waits.

The tables:

* ``waiting``: pending requests by key (a key is pending at most once);
* ``acking``: notifies waiting for their ACK, by packet id (ACK framing);
* the schedule (:mod:`.schedule`), giving each pending call its next event
  (a retransmission or the end of its wait);
* the delivery log (duplicate and reply caches, ACK framing);
* the RTT table that sizes adaptive retransmission timeouts.
"""

from __future__ import annotations

import math
import random
import sys
from collections import deque
from collections.abc import Callable, Hashable
from typing import Any, Generic, NamedTuple, TypeVar

from .._adapter import MessageAdapter
from ..errors import AdapterError, DuplicateKeyError, MessageTooLarge
from ..retry import RetryPolicy
from ..stats import Counters
from .delivery_log import DeliveryLog
from .framing import (
    FLAG_ACK,
    FLAG_ACK_REQUESTED,
    HEADER_SIZE,
    ID_BITS,
    ID_MASK,
    Framing,
    ack_for,
    pack_word,
    unpack_word,
)
from .rtt import RttTable
from .schedule import Lane, Schedule

M = TypeVar("M")
Address = Any
#: ``report(reason, addr, detail)`` is told of every dropped datagram.
Reporter = Callable[[str, Address, object], None]

REQUEST = 0
NOTIFY = 1
#: Bytes above which an empty table is replaced by a new one.
_SHRINK_ABOVE = 64 * 1024


class Received(NamedTuple, Generic[M]):
    """A message for the application: the message, its size in bytes and its sender.

    ``size`` is the length of the adapter's bytes (the datagram less any framing
    header); ``addr`` has the form of the sender's ``local_addr`` and can be passed
    back to any send call.
    """

    msg: M
    size: int
    addr: Address


class Pending:
    """One call waiting for its reply (request) or its ACK (notify)."""

    __slots__ = (
        "addr",
        "attempts",
        "deadline",
        "done",
        "due",
        "frame",
        "interval",
        "key",
        "kind",
        "lane",
        "max_attempts",
        "packet_id",
        "policy",
        "result",
        "sent_at",
        "waiter",
    )
    # Set only when used (an unset slot costs nothing to create): max_attempts
    # and interval by a retry policy, result on completion.
    max_attempts: int | None
    interval: float
    result: Any

    # No __init__: calling a class with a Python __init__ costs CPython 3.11 about
    # three times what new_pending() does (a hot path: one per call).
    kind: int
    key: Hashable
    addr: Address
    frame: bytes | None
    packet_id: int
    waiter: Any
    sent_at: float
    deadline: float
    attempts: int
    policy: RetryPolicy | None
    due: float
    done: bool
    lane: Lane | None


_alloc = object.__new__


def new_pending(
    kind: int,
    key: Hashable,
    addr: Address,
    frame: bytes,
    packet_id: int,
    waiter: Any,
    now: float,
    deadline: float,
) -> Pending:
    """A call sent once at ``now``, due at its ``deadline``, with no retry policy yet."""
    p: Pending = _alloc(Pending)
    p.kind = kind
    p.key = key
    p.addr = addr
    p.frame = frame
    p.packet_id = packet_id
    p.waiter = waiter
    p.sent_at = now
    p.deadline = deadline
    p.attempts = 1
    p.policy = None
    p.due = deadline
    p.done = False
    p.lane = None
    return p


#: The packet id of an ACK-framed datagram whose header word is not read yet (>= 0).
_UNREAD = 1 << 62

#: Builds a Received without NamedTuple's Python-level __new__ (a serving hot path).
_new_tuple = tuple.__new__


def _null_report(reason: str, addr: Address, detail: object) -> None:
    return None


class Endpoint(Generic[M]):
    """Sans-I/O state of one dispatcher: see the module docstring."""

    def __init__(
        self,
        adapter: MessageAdapter[M],
        *,
        framing: Framing = "ack",
        max_datagram_size: int = 65507,
        max_queue: int = 1024,
        check_source: bool = True,
        delivery_log: DeliveryLog | None = None,
        rtt: RttTable | None = None,
        rng: random.Random | None = None,
        report: Reporter | None = None,
    ) -> None:
        if framing not in ("ack", "raw"):
            raise ValueError(f"framing must be 'ack' or 'raw', not {framing!r}")
        if max_queue < 1:
            raise ValueError("max_queue must be at least 1")
        self.adapter = adapter
        self._to_raw: Callable[[Any], bytes] = adapter.msg_to_raw
        self._from_raw: Callable[[bytes], Any] = adapter.raw_to_msg
        self._key_of: Callable[[Any], Hashable] = adapter.msg_key
        self._is_reply: Callable[[Any], bool] | None = getattr(adapter, "is_reply", None)
        self.ack = framing == "ack"
        self.framing: Framing = framing
        self.max_datagram_size = max_datagram_size
        self.max_queue = max_queue
        self.check_source = check_source
        self.log = delivery_log if delivery_log is not None else DeliveryLog()
        self.rtt = rtt if rtt is not None else RttTable()
        self.rng = rng if rng is not None else random.Random()
        self.report: Reporter = report if report is not None else _null_report
        self.counters = Counters()
        self._seen = self.log.by_id.get
        self.waiting: dict[Hashable, Pending] = {}
        self.acking: dict[int, Pending] = {}
        self.inbox: deque[Received[M]] = deque()
        self.outbox: list[tuple[bytes, Address]] = []
        self.schedule = Schedule()
        # the schedule's lane for the timeout of the last request sent once
        self._final_timeout = math.nan
        self._final_lane: Lane | None = None
        self._next_id = self.rng.getrandbits(ID_BITS)

    # ------------------------------------------------------------------ sending

    def encode(self, msg: M) -> tuple[Hashable, bytes]:
        """The key and adapter bytes of an outgoing message (AdapterError on failure)."""
        try:
            key = self._key_of(msg)
            raw = self._to_raw(msg)
        except Exception as exc:
            raise AdapterError(f"the adapter could not encode {type(msg).__name__}: {exc}") from exc
        if type(raw) is not bytes:
            raw = self._as_bytes(raw)
        return key, raw

    @staticmethod
    def _as_bytes(raw: object) -> bytes:
        if not isinstance(raw, bytes | bytearray | memoryview):
            raise AdapterError(f"msg_to_raw returned {type(raw).__name__}, not bytes")
        return bytes(raw)

    def _frame(self, flags: int, raw: bytes) -> tuple[bytes, int]:
        if self.ack:
            packet_id = self._next_id
            self._next_id = packet_id + 1 if packet_id < ID_MASK else 0
            frame = pack_word((flags << ID_BITS) | packet_id) + raw
        else:
            packet_id = -1
            frame = raw
        if len(frame) > self.max_datagram_size:
            raise MessageTooLarge(len(frame), self.max_datagram_size)
        return frame, packet_id

    def start_request(
        self,
        msg: M,
        addr: Address,
        waiter: Any,
        now: float,
        timeout: float,
        policy: RetryPolicy | None,
    ) -> Pending:
        """Register a request; the caller sends ``pending.frame`` to ``addr``."""
        # The hot path: encode() and _frame() are inlined here.
        try:
            key = self._key_of(msg)
            raw = self._to_raw(msg)
        except Exception as exc:
            raise AdapterError(f"the adapter could not encode {type(msg).__name__}: {exc}") from exc
        if type(raw) is not bytes:
            raw = self._as_bytes(raw)
        waiting = self.waiting
        try:
            if key in waiting:
                raise DuplicateKeyError(key)
        except TypeError as exc:
            raise AdapterError(f"msg_key returned an unhashable {type(key).__name__}") from exc
        if self.ack:
            packet_id = self._next_id
            self._next_id = packet_id + 1 if packet_id < ID_MASK else 0
            frame = pack_word(packet_id) + raw
        else:
            packet_id = -1
            frame = raw
        if len(frame) > self.max_datagram_size:
            raise MessageTooLarge(len(frame), self.max_datagram_size)
        # new_pending(), inlined: a Python call frame is a tenth of this method's cost
        p: Pending = _alloc(Pending)
        p.kind = REQUEST
        p.key = key
        p.addr = addr
        p.frame = frame
        p.packet_id = packet_id
        p.waiter = waiter
        p.sent_at = now
        p.deadline = p.due = now + timeout
        p.attempts = 1
        p.policy = None
        p.done = False
        waiting[key] = p
        if policy is None:
            lane = self._final_lane
            if lane is not None and timeout == self._final_timeout:
                lane[p] = None  # Schedule.add_final(), inlined for the last timeout's lane
                p.lane = lane
            else:
                self.schedule.add_final(p, timeout)
                self._final_timeout = timeout
                self._final_lane = p.lane
        else:
            self._schedule_first(p, policy, now)
        self.counters.requests += 1
        return p

    def start_notify(
        self,
        msg: M,
        addr: Address,
        waiter: Any,
        now: float,
        timeout: float,
        policy: RetryPolicy | None,
    ) -> Pending:
        """Register a notify that waits for its ACK (ACK framing only)."""
        if not self.ack:
            raise RuntimeError("a notify can wait for an ACK only with ACK framing")
        key, raw = self.encode(msg)
        frame, packet_id = self._frame(FLAG_ACK_REQUESTED, raw)
        self._attach_reply(addr, key, frame)
        p = new_pending(NOTIFY, key, addr, frame, packet_id, waiter, now, now + timeout)
        self.acking[packet_id] = p
        self._schedule_first(p, policy, now)
        self.counters.notifies += 1
        return p

    def frame_oneway(self, msg: M, addr: Address) -> bytes:
        """The datagram of a message sent once, waiting for nothing.

        Over ACK framing, if it answers a message delivered from ``addr`` with
        the same key, it is kept in the reply cache. (A serving hot path:
        encode() and _frame() are inlined.)
        """
        ack = self.ack
        try:
            raw = self._to_raw(msg)
            key = self._key_of(msg) if ack else None
        except Exception as exc:
            raise AdapterError(f"the adapter could not encode {type(msg).__name__}: {exc}") from exc
        if type(raw) is not bytes:
            raw = self._as_bytes(raw)
        if ack:
            packet_id = self._next_id
            self._next_id = packet_id + 1 if packet_id < ID_MASK else 0
            frame = pack_word(packet_id) + raw
        else:
            frame = raw
        if len(frame) > self.max_datagram_size:
            raise MessageTooLarge(len(frame), self.max_datagram_size)
        if ack:
            try:
                self.log.attach_reply(addr, key, frame)
            except TypeError:
                pass  # an unhashable key cannot name a delivered request
        self.counters.notifies += 1
        return frame

    def _attach_reply(self, addr: Address, key: Hashable, frame: bytes) -> None:
        try:
            self.log.attach_reply(addr, key, frame)
        except TypeError:
            pass  # an unhashable key cannot name a delivered request

    def _schedule_first(self, p: Pending, policy: RetryPolicy | None, now: float) -> None:
        if policy is not None:
            p.policy = policy
            p.max_attempts = policy.max_attempts
            first = policy.initial_timeout
            if first is None:
                first = self.rtt.rto(p.addr)
            interval = self._jitter(min(first, policy.max_interval), policy.jitter)
            p.interval = interval
            if now + interval < p.deadline:
                p.due = now + interval
        self.schedule.add(p)

    def _jitter(self, interval: float, jitter: float) -> float:
        if jitter:
            return interval * (1.0 + jitter * (2.0 * self.rng.random() - 1.0))
        return interval

    def cancel(self, p: Pending, *, counted: bool = True) -> None:
        """Forget a call whose caller stopped waiting (cancelled, failed to send)."""
        if p.done:
            return
        self._finish(p)
        self.schedule.finished(p)
        if counted:
            self.counters.cancelled += 1

    def _finish(self, p: Pending) -> None:
        p.done = True
        p.frame = None
        if p.kind == REQUEST:
            if self.waiting.get(p.key) is p:
                del self.waiting[p.key]
        else:
            self.acking.pop(p.packet_id, None)

    # ------------------------------------------------------------------ timers

    def next_deadline(self) -> float | None:
        """When :meth:`handle_timer` must next run, or None when nothing waits."""
        when = self.schedule.next_due()
        if when is None:
            self._shrink()
        return when

    def _shrink(self) -> None:
        """Give back the tables' memory after a peak (a dict never shrinks by itself)."""
        if not self.waiting and sys.getsizeof(self.waiting) > _SHRINK_ABOVE:
            self.waiting = {}
        if not self.waiting and not self.acking:
            self._clear_schedule()  # its lanes give their memory back too
        if not self.acking and sys.getsizeof(self.acking) > _SHRINK_ABOVE:
            self.acking = {}

    def handle_timer(self, now: float) -> list[Pending]:
        """Retransmit what is due (into the outbox); return the calls that timed out."""
        expired: list[Pending] = []
        outbox = self.outbox
        counters = self.counters
        schedule = self.schedule
        p: Any
        for p in schedule.pop_due(now):
            policy = p.policy
            if (
                policy is None
                or now >= p.deadline
                or (p.max_attempts is not None and p.attempts >= p.max_attempts)
            ):
                self._finish(p)
                counters.timeouts += 1
                expired.append(p)
                continue
            assert p.frame is not None
            p.attempts += 1
            counters.retransmissions += 1
            outbox.append((p.frame, p.addr))
            interval = self._jitter(
                min(p.interval * policy.backoff, policy.max_interval), policy.jitter
            )
            p.interval = interval
            p.due = min(now + interval, p.deadline)
            schedule.add(p)
        return expired

    def close(self) -> list[Pending]:
        """Forget every pending call and queued message; return the calls to fail."""
        pending = [*self.waiting.values(), *self.acking.values()]
        for p in pending:
            p.done = True
            p.frame = None
        self.waiting.clear()
        self.acking.clear()
        self._clear_schedule()
        self.counters.discarded_on_close += len(self.inbox)
        self.inbox.clear()
        self.outbox.clear()
        return pending

    def _clear_schedule(self) -> None:
        self.schedule.clear()
        self._final_timeout = math.nan
        self._final_lane = None

    @property
    def pending_count(self) -> int:
        """Requests and notifies in flight."""
        return len(self.waiting) + len(self.acking)

    @property
    def heap_size(self) -> int:
        """Entries in the timer queue (pending calls and finished ones not yet swept)."""
        return len(self.schedule)

    # ------------------------------------------------------------------ receiving

    def receive(self, data: bytes, addr: Address, now: float) -> Pending | None:
        """Take one datagram; return the call it completes, if any.

        ACKs and cached replies go to the outbox; messages for the application
        go to the inbox; everything dropped is counted and reported.
        """
        counters = self.counters
        size = len(data)
        if size > self.max_datagram_size:
            counters.oversize += 1
            self.report("oversize", addr, size)
            return None
        if self.ack:
            if size < HEADER_SIZE:
                if size:
                    counters.header_errors += 1
                    self.report("header", addr, f"{size}-byte datagram")
                else:
                    counters.empty += 1
                    self.report("empty", addr, None)
                return None
            flags = data[0]
            if flags:
                (packet_id,) = unpack_word(data)
                packet_id &= ID_MASK
                if flags == FLAG_ACK:
                    if size != HEADER_SIZE:
                        counters.header_errors += 1
                        self.report("header", addr, "ACK with payload")
                        return None
                    return self._on_ack(packet_id, addr, now)
                if flags != FLAG_ACK_REQUESTED:
                    counters.header_errors += 1
                    self.report("header", addr, f"flags 0x{flags:02x}")
                    return None
            else:
                # With no flags the header word is the packet id. It is read below
                # only if needed: a reply an is_reply adapter marks never needs it.
                packet_id = _UNREAD
            raw = data[HEADER_SIZE:]
            size -= HEADER_SIZE
        else:
            if not size:
                counters.empty += 1
                self.report("empty", addr, None)
                return None
            flags = 0
            packet_id = -1
            raw = data
        waiting = self.waiting
        is_reply = self._is_reply
        try:
            msg = self._from_raw(raw)
            key = self._key_of(msg)
            if is_reply is None:
                p = waiting.get(key)
                reply = p is not None and (not self.check_source or p.addr == addr)
            elif is_reply(msg):
                reply = True
                p = waiting.get(key)
            else:
                reply = False
                p = None
                hash(key)  # the delivery log and reply cache index by it
        except Exception as exc:
            counters.decode_errors += 1
            self.report("decode", addr, exc)
            return None

        if packet_id >= 0 and not (reply and is_reply is not None):
            # Was this datagram delivered before? (A reply marked by is_reply needs
            # no look-up: replies are never recorded then, a late copy simply finds
            # no pending call.)
            if packet_id is _UNREAD:
                (packet_id,) = unpack_word(data)
            id_key = (addr, packet_id)
            try:
                entry = self._seen(id_key)
            except TypeError:  # a custom transport reported an unhashable address
                counters.decode_errors += 1
                self.report("address", addr, "unhashable sender address")
                return None
            # (An expired entry is forgotten, with its reply, by the log.add() below:
            # entries expire in arrival order, so the oldest one has expired too.)
            if entry is not None and entry[0] > now:
                counters.duplicates += 1
                if flags:
                    self.outbox.append((ack_for(packet_id), addr))
                    counters.acks_sent += 1
                reply_again = self.log.resend(entry)  # (a bounded number of times)
                if reply_again is not None:
                    self.outbox.append((reply_again, addr))
                    counters.replies_resent += 1
                return None

        if reply:
            if p is None:
                counters.unknown_replies += 1
                self.report("unknown reply", addr, key)
                if flags:  # processed: a retransmission would not change the outcome
                    self.outbox.append((ack_for(packet_id), addr))
                    counters.acks_sent += 1
                return None
            if self.check_source and p.addr != addr:
                counters.wrong_source += 1
                self.report("wrong source", addr, key)
                return None
            del waiting[key]
            p.done = True
            p.frame = None
            p.result = msg
            lane = p.lane  # Schedule.finished(), inlined
            if lane is None:
                self.schedule.stale += 1
            else:
                del lane[p]
            counters.replies_matched += 1
            # RTT samples (Karn: first attempts only) from every call that
            # retransmits, and from one in eight of the others.
            if p.policy is None:
                if not counters.replies_matched & 7:  # (sent once: attempts is 1)
                    self.rtt.sample(p.addr, now - p.sent_at)
            elif p.attempts == 1:
                self.rtt.sample(p.addr, now - p.sent_at)
            if packet_id >= 0:
                if is_reply is None:
                    # without is_reply a network duplicate of this reply would look
                    # like a new message: remember it (with is_reply it is just an
                    # unknown reply)
                    self.log.add(id_key, None, now)
                if flags:
                    self.outbox.append((ack_for(packet_id), addr))
                    counters.acks_sent += 1
            return p

        inbox = self.inbox
        if len(inbox) >= self.max_queue:
            counters.queue_drops += 1
            self.report("queue full", addr, key)
            return None
        inbox.append(_new_tuple(Received, (msg, size, addr)))
        counters.delivered += 1
        if packet_id >= 0:
            self.log.add(id_key, (addr, key), now)
            if flags:
                self.outbox.append((ack_for(packet_id), addr))
                counters.acks_sent += 1
        return None

    def _on_ack(self, packet_id: int, addr: Address, now: float) -> Pending | None:
        p = self.acking.get(packet_id)
        if p is None or (self.check_source and p.addr != addr):
            self.counters.unknown_acks += 1
            self.report("unknown ACK", addr, packet_id)
            return None
        del self.acking[packet_id]
        p.done = True
        p.frame = None
        p.result = None
        self.schedule.finished(p)
        self.counters.acks_received += 1
        if p.attempts == 1:
            self.rtt.sample(p.addr, now - p.sent_at)
        return p
