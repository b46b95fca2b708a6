"""The protocol state of one dispatcher, with no I/O: the core.

:class:`Endpoint` turns outgoing messages into datagrams, incoming datagrams
into deliveries and completions, and the passing of time into retransmissions
and timeouts. It owns every table (see :class:`Endpoint`); the driver
(:mod:`aiodisp._dispatcher`) owns the loop, the transport and the futures, and
meets the core only through the contract written in :class:`Endpoint`'s
docstring.
"""

from __future__ import annotations

import math
import random
import sys
from collections import deque
from collections.abc import Callable, Hashable
from typing import Any, Generic, TypeVar

from .._adapter import MessageAdapter
from .._kind import Kind
from ..errors import AdapterError, DuplicateKeyError, MessageTooLarge
from ..retry import RetryPolicy
from ..stats import Counters, Stats
from .budget import RetryBudget
from .bundling import FLAG_BUNDLE, split_bundle
from .congestion import Peer, Windows
from .delivery_log import DeliveryLog
from .framing import (
    FLAG_ACK,
    FLAG_ACK_REQUESTED,
    FLAG_REPLY,
    HEADER_SIZE,
    ID_BITS,
    ID_MASK,
    Framing,
    ack_for,
    pack_word,
    unpack_word,
)
from .message_layer import MessageLayer, wants_message_layer
from .packet_ids import PacketIds
from .pending import NOTIFY, REQUEST, Pending, _alloc, new_pending
from .received import Received
from .rtt import RttTable
from .schedule import Schedule

__all__ = ["Endpoint", "Pending", "Received", "Reporter"]

M = TypeVar("M")
Address = Any
#: ``report(reason, addr, detail)`` is told of every dropped datagram.
Reporter = Callable[[str, Address, object], None]

#: First waits remembered (see Endpoint._first_wait) before they are drawn afresh.
_FIRST_WAITS_MAX = 64
#: Bytes above which an empty table is replaced by a new one.
_SHRINK_ABOVE = 64 * 1024


#: The header word of a reply, less the packet id of the message it answers.
_REPLY_WORD = FLAG_REPLY << ID_BITS

#: The packet id of an ACK-framed datagram whose header word is not read yet (>= 0).
_UNREAD = 1 << 62
#: the key of a message over raw framing that is no reply: never asked of the adapter
_UNKEYED: Any = object()

#: Builds a Received without NamedTuple's Python-level __new__ (a serving hot path).
_new_tuple = tuple.__new__


def _adapter_failed(method: str, msg: object, exc: Exception) -> AdapterError:
    return AdapterError(f"the adapter's {method}() failed on a {type(msg).__name__}: {exc}")


def _null_report(reason: str, addr: Address, detail: object) -> None:
    return None


class Endpoint(Generic[M]):
    """Sans-I/O state of one dispatcher.

    **What drives it.** Every entry point takes ``now`` (seconds on any
    monotonic clock) and none blocks, sleeps or touches a socket:

    * calls: :meth:`start_request`, :meth:`start_notify` (register and frame a
      call; the driver sends ``pending.frame``), :meth:`frame_oneway` (the
      datagram of a message sent once), :meth:`cancel` (the caller stopped
      waiting);
    * datagrams: :meth:`receive` (returns the call it completes, if any; a
      bundle of datagrams, :mod:`.bundling`, returns None and leaves the calls
      its datagrams completed in :attr:`completed`, for the driver to wake and
      clear);
    * time: :meth:`handle_timer` (retransmits into the outbox; returns the calls
      that timed out), and :meth:`next_deadline`, the one call that says when
      the core next needs :meth:`handle_timer` (the driver arms one timer from
      it; a call's first event is ``pending.due``, read once after it starts);
    * :meth:`close` (returns the calls to fail).

    **What it hands back.** Datagrams to send are appended to :attr:`outbox` as
    ``(datagram, addr)`` pairs; the driver sends them all and clears it.
    Messages for the application are appended to :attr:`inbox`; the driver
    pops them from the left for readers (what was delivered and is no longer
    queued or discarded is what the application consumed: ``stats()`` derives
    it, so taking a message costs the driver nothing more). What is dropped is
    counted in :attr:`counters` and told to ``report(reason, addr, detail)``.

    **What the driver may touch, and why.** Method calls everywhere except on
    the per-datagram and per-call hot paths, where a Python frame would cost
    more than the work; there the driver reads these attributes:

    * :attr:`outbox`, :attr:`inbox` and :attr:`completed` (above);
    * :attr:`waiting` and :attr:`acking`, only their ``len()``, for the room
      check of a call (``pending_count`` is the same as a method);
    * :attr:`counters`, to count transport errors and failed sends (the
      driver's only counters);
    * :attr:`throttled`, tested for emptiness and then for the call's
      address: the peers a new call must wait for (their congestion window is
      full, or calls wait for it already); such a call waits in the driver's
      :class:`~aiodisp._admission.PeerWindows`, which asks
      :meth:`window_room` and tells :meth:`window_wait_begins` /
      :meth:`window_wait_ends`;
    * a :class:`Pending`'s ``frame`` (first send), ``due`` (arming the timer),
      ``deadline``, ``policy``, ``attempts``, ``key``, ``addr``, ``kind``
      (errors), ``done`` and ``result``, and its ``waiter`` (the driver's
      future, which the core stores and never touches).

    **The tables:** ``waiting`` (pending requests by key: a key is pending at
    most once), ``acking`` (notifies waiting for their ACK, by packet id), the
    schedule (:mod:`.schedule`: each pending call's next event), the delivery
    log (:mod:`.delivery_log`: duplicate and reply caches, ACK framing), the
    RTT table (:mod:`.rtt`) that sizes adaptive retransmission timeouts, and
    the peers' congestion windows and retry accounts (:mod:`.congestion`,
    :mod:`.budget`). The core builds them all from its options.

    Options: ``framing``; ``max_datagram_size`` (larger outgoing datagrams raise
    :class:`MessageTooLarge`, larger incoming ones are dropped); ``max_queue``
    (the inbox bound); ``check_source`` (a reply or ACK counts only from the
    call's destination); ``dedup_ttl``, ``dedup_capacity``,
    ``reply_cache_bytes`` (the delivery log's bounds); ``seed`` (packet ids and
    jitter; None: unpredictable); ``congestion`` (a congestion window per
    peer; off by default here, on in the Dispatcher); ``retry_budget`` (a
    :class:`RetryBudget` per peer, or None).
    """

    def __init__(
        self,
        adapter: MessageAdapter[M],
        *,
        framing: Framing = "ack",
        max_datagram_size: int = 65507,
        max_queue: int = 1024,
        check_source: bool = True,
        dedup_ttl: float = 30.0,
        dedup_capacity: int = 100_000,
        reply_cache_bytes: int = 8 << 20,
        seed: int | None = None,
        report: Reporter | None = None,
        congestion: bool = False,
        retry_budget: RetryBudget | None = None,
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
        self.log = DeliveryLog(
            ttl=dedup_ttl, capacity=dedup_capacity, reply_bytes=reply_cache_bytes
        )
        self.rtt = RttTable()
        self._rtt_of = self.rtt.estimators.get
        self._rto_initial = self.rtt.rto(None)
        self.windows = Windows(enabled=congestion)
        self.budget = retry_budget
        #: peers a new call must wait for (see the class docs)
        self.throttled = self.windows.throttled
        self._peer_of = self.windows.peers.get
        self.rng = random.Random(seed)
        self.report: Reporter = report if report is not None else _null_report
        self.counters = Counters()
        self._seen = self.log.by_id.get
        self.waiting: dict[Hashable, Pending] = {}
        self.acking: dict[int, Pending] = {}
        self.inbox: deque[Received[M]] = deque()
        self.outbox: list[tuple[bytes, Address]] = []
        #: the calls a bundle completed (receive() returns None for a bundle)
        self.completed: list[Pending] = []
        self.schedule = Schedule()
        # the schedule's lane for a wait, if it has one (Schedule keeps this dict)
        self._lane_of = self.schedule.lanes.get
        # (first retransmission interval, jitter) -> the first wait drawn for it
        self._first_waits: dict[tuple[float, float], float] = {}
        # random packet ids (see .packet_ids): popped from ids.ready, drawn when it is empty
        self._ids = PacketIds(seed)
        self._ready = self._ids.ready
        # The optional message-layer methods (classify, transaction_key, ack_for): with
        # raw framing they get receive and the call starts of their own, decided here
        # once, so an adapter without them keeps the plain paths and their cost.
        self.layer: MessageLayer | None = None
        if not self.ack and wants_message_layer(adapter):
            layer = self.layer = MessageLayer(self)
            self.receive = layer.receive  # type: ignore[method-assign]
            self.start_request = layer.start_request  # type: ignore[method-assign]
            self.start_notify = layer.start_notify  # type: ignore[method-assign]
            self.frame_oneway = layer.frame_oneway  # type: ignore[method-assign]
        elif self._is_reply is None and callable(getattr(adapter, "classify", None)):
            # (ACK framing's header does the message layer's work: classify is is_reply)
            classify = adapter.classify  # type: ignore[attr-defined]
            self._is_reply = lambda msg: classify(msg) is Kind.REPLY

    # ------------------------------------------------------------------ sending

    def encode(self, msg: M) -> tuple[Hashable, bytes]:
        """The key and adapter bytes of an outgoing message (AdapterError on failure)."""
        try:
            key = self._key_of(msg)
        except Exception as exc:
            raise _adapter_failed("msg_key", msg, exc) from exc
        try:
            raw = self._to_raw(msg)
        except Exception as exc:
            raise _adapter_failed("msg_to_raw", msg, exc) from exc
        if type(raw) is not bytes:
            raw = self._as_bytes(raw)
        return key, raw

    @staticmethod
    def _as_bytes(raw: object) -> bytes:
        if not isinstance(raw, bytes | bytearray | memoryview):
            kind = type(raw).__name__
            raise AdapterError(f"the adapter's msg_to_raw() returned a {kind}, not bytes")
        return bytes(raw)

    def _frame(self, flags: int, raw: bytes) -> tuple[bytes, int]:
        if self.ack:
            ready = self._ready
            packet_id = ready.pop() if ready else self._ids.draw()
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
        accept: Callable[[Any], bool] | None = None,
    ) -> Pending:
        """Register a request; the caller sends ``pending.frame`` to ``addr``.

        ``accept(reply) -> bool``: a reply with the key, from ``addr``, that it
        refuses is dropped (``unaccepted``) and the request keeps waiting.
        """
        # The hot path: encode() and _frame() are inlined here.
        try:
            key = self._key_of(msg)
        except Exception as exc:
            raise _adapter_failed("msg_key", msg, exc) from exc
        try:
            raw = self._to_raw(msg)
        except Exception as exc:
            raise _adapter_failed("msg_to_raw", msg, exc) from exc
        if type(raw) is not bytes:
            raw = self._as_bytes(raw)
        waiting = self.waiting
        try:
            if key in waiting:
                raise DuplicateKeyError(key)
        except TypeError as exc:
            raise AdapterError(f"msg_key returned an unhashable {type(key).__name__}") from exc
        if self.ack:
            ready = self._ready
            packet_id = ready.pop() if ready else self._ids.draw()
            frame = pack_word(packet_id) + raw
        else:
            packet_id = -1
            frame = raw
        if len(frame) > self.max_datagram_size:
            raise MessageTooLarge(len(frame), self.max_datagram_size)
        # new_pending(), inlined: a Python call frame is a tenth of this method's cost
        p: Pending = _alloc(Pending)
        # Windows.started(), inlined (tests/core/test_congestion_copies.py pins it):
        # with answered_call() below, 2,230 instructions per request as method calls,
        # 1,380 inlined (callgrind, 200,000 start-and-answer cycles of one peer)
        peer = self._peer_of(addr)
        if peer is None:
            peer = self.windows.peer(addr, now)
        p.peer = peer
        peer.sends += 1
        n = peer.in_flight = peer.in_flight + 1
        if n >= peer.limit:
            self.throttled.add(addr)
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
        # (read by the reply branch of receive(); with the check there this costs ~200
        # instructions per request of a whole uvloop client, within callgrind's noise:
        # raw 48,320 -> 48,525, server 30,545 -> 30,310, benchmarks/client_instructions.py)
        p.accept = accept
        p.done = False
        waiting[key] = p
        if policy is None:
            lane = self._lane_of(timeout)
            if lane is not None:
                lane[p] = None  # Schedule.add_final(), inlined for a lane that exists
                p.lane = lane
            else:
                self.schedule.add_final(p, timeout, p.packet_id)
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
        self._started(p, now)
        self.counters.notifies += 1
        return p

    def _started(self, p: Pending, now: float) -> None:
        """Count a call just made in its peer's window (and its first send)."""
        windows = self.windows
        peer = windows.peers.get(p.addr)
        if peer is None:
            peer = windows.peer(p.addr, now)
        p.peer = peer
        windows.started(peer)

    def frame_oneway(self, msg: M, addr: Address) -> bytes:
        """The datagram of a message sent once, waiting for nothing.

        Over ACK framing, if it answers a message delivered from ``addr`` with
        the same key, it is a *reply*: its header carries :data:`FLAG_REPLY` and
        the packet id of the message it answers (so the peer matches it to that
        very call, and a copy of it to no later one), and it is kept in the reply
        cache. Otherwise it is framed as :meth:`_frame` does. (A serving hot
        path: encode() and _frame() are inlined.)
        """
        ack = self.ack
        try:
            key = self._key_of(msg) if ack else None  # (raw framing caches no reply)
        except Exception as exc:
            raise _adapter_failed("msg_key", msg, exc) from exc
        try:
            raw = self._to_raw(msg)
        except Exception as exc:
            raise _adapter_failed("msg_to_raw", msg, exc) from exc
        if type(raw) is not bytes:
            raw = self._as_bytes(raw)
        if not ack:
            if len(raw) > self.max_datagram_size:
                raise MessageTooLarge(len(raw), self.max_datagram_size)
            self.counters.notifies += 1
            return raw
        if len(raw) + HEADER_SIZE > self.max_datagram_size:
            raise MessageTooLarge(len(raw) + HEADER_SIZE, self.max_datagram_size)
        log = self.log
        is_reply = self._is_reply
        try:
            # (a message its adapter says is no reply answers nothing, whatever its key)
            entry = log.reply_entry(addr, key) if is_reply is None or is_reply(msg) else None
        except TypeError:
            entry = None  # an unhashable key cannot name a delivered request
        if entry is None:
            ready = self._ready
            frame = pack_word(ready.pop() if ready else self._ids.draw()) + raw
        else:
            frame = pack_word(_REPLY_WORD | entry[1][1]) + raw
            log.keep_reply(entry, frame)
        self.counters.notifies += 1
        return frame

    def _attach_reply(self, addr: Address, key: Hashable, frame: bytes) -> None:
        try:
            self.log.attach_reply(addr, key, frame)
        except TypeError:
            pass  # an unhashable key cannot name a delivered request

    def _schedule_first(self, p: Pending, policy: RetryPolicy | None, now: float) -> None:
        """Schedule a call's first event: its first retransmission, or its deadline.

        The first wait comes from :meth:`_first_wait`, the same for every call made
        with the same policy and round-trip estimate, so such calls are due in the
        order they were made and share a FIFO lane of the schedule (no heap entry:
        101 B and a push and a pop less per call; ACK framing's requests all have a
        policy). Later waits (backoff) go to the heap.
        """
        if policy is not None:
            p.policy = policy
            first = policy.initial_timeout
            adaptive = first is None
            if first is None:
                # RttTable.rto(), inlined (two Python calls less per call made: ACK
                # client 58.7k -> 56.5k instructions per request, client_instructions.py;
                # tests/core/test_endpoint.py pins it to RttTable.rto)
                est = self._rtt_of(p.addr)
                first = self._rto_initial if est is None else est.rto
            if first > policy.max_interval:
                first = policy.max_interval
            wait = self._first_waits.get((first, policy.jitter))
            if wait is None:
                wait = self._first_wait(first, policy.jitter, adaptive)
            p.interval = wait
            due = now + wait
            if due < p.deadline:
                p.due = due
                lane = self._lane_of(wait)
                if lane is None:
                    lane = self.schedule.lane(wait)
                if lane is not None:
                    lane[p] = None
                    p.lane = lane
                    return
        self.schedule.add(p, p.packet_id)

    def _first_wait(self, first: float, jitter: float, adaptive: bool) -> float:
        """The first wait of calls whose policy says ``first`` (and ``jitter``).

        An ``adaptive`` ``first`` (the round-trip estimate's) is rounded up to a
        step of 1/16 octave (4.4 %), so that an estimate that moves a little keeps
        its lane; a policy's own is kept as it is. It is spread by
        ``jitter`` once, for every call that gets it: one dispatcher's calls that
        share a lane retransmit together, but two dispatchers (two clients that
        lost the same packet) draw their own spreads.
        """
        waits = self._first_waits
        if len(waits) >= _FIRST_WAITS_MAX:
            waits.clear()
        step = first
        if adaptive and first > 0.0:
            step = 2.0 ** (math.ceil(math.log2(first) * 16.0) / 16.0)
        wait = waits[(first, jitter)] = self._jitter(step, jitter)
        return wait

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

    def unsent(self, p: Pending) -> None:
        """Forget a call whose first datagram could not be sent (it was never made)."""
        if p.done:
            return
        self._finish(p)
        self.schedule.finished(p)
        peer = getattr(p, "peer", None)
        if peer is not None:
            peer.sends -= 1
        if p.kind == REQUEST:
            self.counters.requests -= 1
        else:
            self.counters.notifies -= 1

    def _finish(self, p: Pending) -> None:
        p.done = True
        p.frame = None
        if p.kind == REQUEST:
            if self.waiting.get(p.key) is p:
                del self.waiting[p.key]
        else:
            self.acking.pop(p.packet_id, None)
        if self.layer is not None:
            self.layer.forget(p)
        peer = getattr(p, "peer", None)
        if peer is not None:
            self.windows.ended(peer)

    # ------------------------------------------------------------------ timers

    def next_deadline(self) -> float | None:
        """When :meth:`handle_timer` must next run, or None when nothing waits."""
        return self.schedule.next_due()

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
        windows = self.windows
        budget = self.budget
        refused = None  # the peer the retry budget last refused in this pass
        p: Any
        for p in schedule.pop_due(now):
            if p.frame is None and now < p.deadline:
                # the peer ACKed this request (message layer): resend nothing, wait
                # for its reply until the deadline
                p.due = p.deadline
                schedule.add(p, p.packet_id)
                continue
            policy = p.policy
            last_sent = p.last_sent if p.attempts > 1 else p.sent_at
            peer = getattr(p, "peer", None)
            if (
                policy is None
                or now >= p.deadline
                or (policy.max_attempts is not None and p.attempts >= policy.max_attempts)
            ):
                self._finish(p)
                if peer is not None:
                    windows.timed_out(peer, last_sent, now)
                counters.timeouts += 1
                expired.append(p)
                continue
            if peer is not None:
                # the window says whether it is sent again now (lost, or the peer's
                # probe) or looks again later (another call probes the peer) ...
                later = windows.on_timer(peer, last_sent, now, self.rtt.rto(p.addr))
                if later is not None:
                    p.due = min(later, p.deadline)
                    schedule.add(p, p.packet_id)
                    continue
                # ... and the retry budget whether it may be sent at all. (Refused once,
                # a peer is refused for the rest of this pass: its budget moves only
                # with the clock and its first sends. A stalled peer with 100,000 calls
                # due costs one look at its account, not one each: cProfile of
                # 100,000 held requests, 5.7 of 20.5 s in handle_timer.)
                if budget is not None and (
                    peer is refused or not windows.may_retransmit(peer, budget, now)
                ):
                    refused = peer
                    counters.budget_denied += 1
                    interval = self._jitter(
                        min(p.interval * policy.backoff, policy.max_interval), policy.jitter
                    )
                    p.interval = interval
                    p.due = min(now + interval, p.deadline)
                    schedule.add(p, p.packet_id)
                    continue
            p.attempts += 1
            p.last_sent = now
            counters.retransmissions += 1
            outbox.append((p.frame, p.addr))
            interval = self._jitter(
                min(p.interval * policy.backoff, policy.max_interval), policy.jitter
            )
            p.interval = interval
            p.due = min(now + interval, p.deadline)
            schedule.add(p, p.packet_id)
        if not self.waiting and not self.acking:
            self._shrink()
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
        if self.layer is not None:
            self.layer.clear()
        return pending

    def _clear_schedule(self) -> None:
        self.schedule.clear()
        self._first_waits.clear()  # (new lanes draw new spreads)

    def in_flight(self) -> int:
        """Requests and notifies in flight."""
        return len(self.waiting) + len(self.acking)

    @property
    def pending_count(self) -> int:
        """Requests and notifies in flight (:meth:`in_flight` as a property)."""
        return self.in_flight()

    def key_of(self, msg: M) -> Hashable:
        """The key of ``msg`` (the adapter's ``msg_key``; its errors propagate)."""
        return self._key_of(msg)

    def stats(self) -> Stats:
        """A snapshot of the counters, with what the application consumed derived."""
        return self.counters.snapshot(queued=len(self.inbox))

    def rto(self, addr: Address) -> float:
        """The adaptive retransmission timeout now estimated for ``addr``."""
        return self.rtt.rto(addr)

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
            reply_to = -1
            if flags:
                if flags == FLAG_BUNDLE:
                    self._receive_bundle(data, addr, now)
                    return None
                (packet_id,) = unpack_word(data)
                packet_id &= ID_MASK
                if flags == FLAG_REPLY:
                    # a reply to our datagram ``packet_id``: nothing of it is recorded
                    # (the id is ours), it completes that call or nothing
                    reply_to = packet_id
                    packet_id = -1
                    flags = 0
                elif flags == FLAG_ACK:
                    if size != HEADER_SIZE:
                        counters.header_errors += 1
                        self.report("header", addr, "ACK with payload")
                        return None
                    return self._on_ack(packet_id, addr, now)
                elif flags != FLAG_ACK_REQUESTED:
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
            packet_id = reply_to = -1
            raw = data
        waiting = self.waiting
        is_reply = self._is_reply
        try:
            msg = self._from_raw(raw)
            if reply_to >= 0:
                reply = True
                key = self._key_of(msg)
                p = waiting.get(key)
                if p is not None and p.packet_id != reply_to:
                    p = None  # a copy of the reply to an earlier call with this key
            elif is_reply is None:
                key = self._key_of(msg)
                p = waiting.get(key)
                reply = p is not None and (not self.check_source or p.addr == addr)
            elif is_reply(msg):
                reply = True
                key = self._key_of(msg)
                p = waiting.get(key)
            else:
                reply = False
                p = None
                if packet_id != -1:  # ACK framing
                    # the delivery log and reply cache index by it (over raw framing
                    # nothing needs the key of a message that is no reply: a server
                    # saves the adapter call, ~1,300 instructions a query)
                    key = self._key_of(msg)
                    hash(key)
                else:
                    key = _UNKEYED
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
                try:
                    same = entry[3] == key
                except Exception:
                    same = True  # a key that cannot compare: take it as the copy it seems
                if not same:
                    # Another datagram with the same random id (see .packet_ids): it is
                    # new. The old delivery gives way, so its cached reply answers no
                    # copy of this one.
                    self.log.forget(id_key)
                    entry = None
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
            if p.accept is not None and not self._accepted(p, msg, addr, flags, packet_id):
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
            # The call leaves its window: Windows.answered_call(), inlined
            # (tests/core/test_congestion_copies.py pins the copy; the cost of both
            # copies is measured at start_request). RTT samples
            # (Karn: first attempts only) from every call while at most eight
            # are in flight to the peer, else from one in eight: several a round
            # trip still, where RFC 6298 asks for one. (Sampling every reply of a
            # call with a retry policy cost 4.6 Python calls per request at 256 in
            # flight: 48.2 -> 43.6, benchmarks/request_profile.py, ACK framing.)
            peer = p.peer
            n = peer.in_flight
            peer.in_flight = n - 1
            if p.attempts == 1:
                peer.heard = now
                sent_at = p.sent_at
                if sent_at > peer.answered:
                    peer.answered = sent_at
                if n <= 8 or not counters.replies_matched & 7:
                    self.rtt.sample(p.addr, now - sent_at)
                if n >= peer.limit or peer.waiting:
                    self.windows.grow(peer, sent_at)
            else:
                self._answered_again(p, peer, now)
            if packet_id >= 0:
                if is_reply is None:
                    # without is_reply a network duplicate of this reply would look
                    # like a new message: remember it (with is_reply it is just an
                    # unknown reply)
                    self.log.add(id_key, None, key, now)
                if flags:
                    self.outbox.append((ack_for(packet_id), addr))
                    counters.acks_sent += 1
            return p

        inbox = self.inbox
        if len(inbox) >= self.max_queue:
            counters.queue_drops += 1
            self.report("queue full", addr, msg if key is _UNKEYED else key)
            return None
        inbox.append(_new_tuple(Received, (msg, size, addr)))
        counters.delivered += 1
        if packet_id >= 0:
            self.log.add(id_key, (addr, key), key, now)
            if flags:
                self.outbox.append((ack_for(packet_id), addr))
                counters.acks_sent += 1
        return None

    def _receive_bundle(self, data: bytes, addr: Address, now: float) -> None:
        """Take each datagram of a bundle (see :mod:`.bundling`) as if it came alone;
        the calls they complete are appended to :attr:`completed`."""
        records = split_bundle(data)
        if isinstance(records, str):
            self.counters.header_errors += 1
            self.report("header", addr, records)
            return None
        self.counters.bundles_received += 1
        completed = self.completed
        receive = self.receive
        for record in records:
            p = receive(record, addr, now)
            if p is not None:
                completed.append(p)
        return None

    def _accepted(self, p: Pending, msg: M, addr: Address, flags: int, packet_id: int) -> bool:
        """Whether the request's ``accept`` takes ``msg``; if not, the reply is dropped."""
        accept = p.accept
        assert accept is not None
        try:
            if accept(msg):
                return True
        except Exception as exc:
            self.report("accept", addr, exc)  # a refusal, told as such
        self.counters.unaccepted += 1
        self.report("unaccepted", addr, p.key)
        if flags:  # processed: a retransmission would not change the outcome
            self.outbox.append((ack_for(packet_id), addr))
            self.counters.acks_sent += 1
        return False

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
        self._answered(p, now)
        return p

    # ------------------------------------------------------------------ windows

    def _answered(self, p: Pending, now: float) -> None:
        """``p`` was answered (its reply or ACK came): it leaves its peer's window.

        (The reply path of :meth:`receive` inlines this for a call sent once.)
        """
        peer = getattr(p, "peer", None)
        if peer is None:
            return
        if p.attempts == 1:
            self.windows.answered_call(peer, p.sent_at, now)
        else:
            peer.in_flight -= 1
            self._answered_again(p, peer, now)

    def _answered_again(self, p: Pending, peer: Peer, now: float) -> None:
        """A call sent more than once was answered (it is out of ``in_flight``).

        Its round trip, from the first send, is a weak RTT sample (CoCoA) after
        one or two retransmissions; the window learns that the peer answered.
        """
        if p.attempts <= 3:
            self.rtt.weak_sample(p.addr, now - p.sent_at)
        self.windows.answered_again(peer, p.sent_at, p.last_sent, now)

    def window(self, addr: Address) -> int | None:
        """The calls ``addr`` may have in flight now (None: congestion control is off)."""
        return self.windows.window(addr)

    def window_room(self, addr: Address) -> int:
        """How many more calls to ``addr`` its window lets start now."""
        return self.windows.room(addr)

    def window_wait_begins(self, addr: Address) -> None:
        """A call to ``addr`` waits for room in its window (the driver's admission)."""
        self.windows.wait_begins(addr, 0.0)

    def window_wait_ends(self, addr: Address) -> None:
        """A call stopped waiting for ``addr``'s window (it starts now, or left)."""
        self.windows.wait_ends(addr)

    def unreachable(self, addr: Address) -> list[Pending]:
        """Nothing listens at ``addr`` (the kernel said so): end every call in flight
        to it; the driver fails them (:class:`~aiodisp.PeerUnreachable`)."""
        calls = [p for p in (*self.waiting.values(), *self.acking.values()) if p.addr == addr]
        for p in calls:
            self._finish(p)
            self.schedule.finished(p)
        self.counters.unreachable += len(calls)
        return calls
