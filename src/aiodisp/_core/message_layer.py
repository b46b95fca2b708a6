"""Message-layer reliability for foreign protocols over raw framing (no I/O).

An adapter for a protocol with two layers (CoAP: the token pairs a response
with its request, the Message ID makes single datagrams reliable) tells the
core about the lower one with three optional methods (see
:class:`aiodisp.MessageAdapter`): ``classify(msg) -> Kind``,
``transaction_key(msg)`` and ``ack_for(msg)``. With raw framing and any of
them, :class:`~aiodisp._core.endpoint.Endpoint` hands its receive path and its
call starts to a :class:`MessageLayer` (decided once, when the endpoint is
built: an adapter without them keeps the plain paths and their cost). The
layer then gives:

* **exactly-once delivery** of ``MESSAGE`` messages per (sender, transaction key)
  (and key: a message that reuses the id with another key is new),
  in the endpoint's :class:`~.delivery_log.DeliveryLog` with its bounds (the
  same ``dedup_ttl``, ``dedup_capacity`` and ``reply_cache_bytes`` as ACK
  framing's packet ids): a copy is not delivered again, and the reply the
  application sent for the first is sent again;
* **ACKs and REJECTs that find their call** by the transaction key of the
  call's own outgoing message (:attr:`MessageLayer.by_tx`): an ACK completes
  a notify, or stops a request's retransmission (it keeps waiting for its
  reply); a REJECT fails the call (:attr:`MessageLayer.failed`, which the
  driver empties: it fails their waiters with :class:`~aiodisp.PeerRejected`);
* **ack_for**: the adapter's acknowledgement (CoAP's empty ACK, or the RST
  answering a ping) sent as soon as a ``MESSAGE``, ``REPLY`` or ``DROP`` is
  taken, duplicates and replies that complete nothing included, but not for a
  message dropped because the queue is full (its sender retries);
* **reliable notify()**, when the adapter has ``classify`` and
  ``transaction_key``: retransmitted until an ACK or REJECT with its
  transaction key arrives from the peer.

``DROP`` is counted in ``ignored``; a reply that ``accept`` refuses in
``unaccepted``; a REJECT that failed a call in ``rejected``; ACKs and REJECTs
that find no call in ``unknown_acks``.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import TYPE_CHECKING, Any

from .._kind import Kind
from ..errors import (
    AdapterError,
    DuplicateKeyError,
    MessageTooLarge,
    PeerRejected,
    ReliabilityUnavailable,
)
from ..retry import RetryPolicy
from .pending import NOTIFY, Pending, new_pending
from .received import Received

if TYPE_CHECKING:
    from .endpoint import Endpoint

__all__ = ["ACKED", "MessageLayer", "wants_message_layer"]

Address = Any

_MESSAGE = Kind.MESSAGE
_REPLY = Kind.REPLY
_ACK = Kind.ACK
_REJECT = Kind.REJECT
_DROP = Kind.DROP
_KINDS = frozenset(Kind)

#: ``Pending.txkey`` of a request the peer has ACKed: nothing is resent and no
#: later ACK or REJECT finds it (its reply still completes it).
ACKED: Any = object()

_new_tuple = tuple.__new__

_METHODS = ("classify", "transaction_key", "ack_for")


def wants_message_layer(adapter: object) -> bool:
    """Whether ``adapter`` has any of the optional message-layer methods."""
    return any(callable(getattr(adapter, name, None)) for name in _METHODS)


def _failed(method: str, msg: object, exc: Exception) -> AdapterError:
    return AdapterError(f"the adapter's {method}() failed on a {type(msg).__name__}: {exc}")


class MessageLayer:
    """The raw-framing receive path and call starts of an endpoint whose adapter
    has ``classify``, ``transaction_key`` or ``ack_for`` (see the module docs).

    It works on its endpoint's tables (``waiting``, ``acking``, the schedule,
    the delivery log, the inbox and outbox, the counters) and adds one:
    :attr:`by_tx`, the pending calls by the transaction key of their outgoing
    message.
    """

    __slots__ = ("_ack_for", "_classify", "_serial", "_txkey", "by_tx", "ep", "failed",
                 "reliable")

    def __init__(self, ep: Endpoint[Any]) -> None:
        adapter = ep.adapter
        self.ep = ep
        self._classify: Callable[[Any], Kind] | None = _method(adapter, "classify")
        self._txkey: Callable[[Any], Hashable | None] | None = _method(
            adapter, "transaction_key"
        )
        self._ack_for: Callable[[Any], Any] | None = _method(adapter, "ack_for")
        #: notify() can wait for the peer's ACK (both methods it needs are there)
        self.reliable = self._classify is not None and self._txkey is not None
        #: pending calls by the transaction key of their outgoing message
        self.by_tx: dict[Hashable, Pending] = {}
        #: calls a REJECT failed since the driver last looked (it fails their waiters)
        self.failed: list[Pending] = []
        # ``acking`` is keyed by packet id; raw framing has none, so a notify gets a
        # private serial number there (its in-flight count and cleanup stay as they are)
        self._serial = 0

    # ------------------------------------------------------------------ calls

    def _tx_of(self, msg: Any) -> Hashable | None:
        txkey = self._txkey
        if txkey is None:
            return None
        try:
            tk = txkey(msg)
        except Exception as exc:
            raise _failed("transaction_key", msg, exc) from exc
        if tk is not None:
            try:
                if tk in self.by_tx:
                    raise DuplicateKeyError(tk, what="transaction key")
            except TypeError as exc:
                name = type(tk).__name__
                raise AdapterError(f"transaction_key returned an unhashable {name}") from exc
        return tk

    def start_request(
        self,
        msg: Any,
        addr: Address,
        waiter: Any,
        now: float,
        timeout: float,
        policy: RetryPolicy | None,
        accept: Callable[[Any], bool] | None = None,
    ) -> Pending:
        """:meth:`Endpoint.start_request`, and the call is found by its transaction key."""
        tk = self._tx_of(msg)
        ep = self.ep
        p = type(ep).start_request(ep, msg, addr, waiter, now, timeout, policy, accept)
        p.txkey = tk
        if tk is not None:
            self.by_tx[tk] = p
        return p

    def start_notify(
        self,
        msg: Any,
        addr: Address,
        waiter: Any,
        now: float,
        timeout: float,
        policy: RetryPolicy | None,
    ) -> Pending:
        """A notify that waits for the peer's ACK (or REJECT) with its transaction key."""
        if not self.reliable:
            raise ReliabilityUnavailable(
                "notify() over raw framing needs an adapter with classify() and "
                "transaction_key()"
            )
        tk = self._tx_of(msg)
        if tk is None:
            raise ReliabilityUnavailable(
                f"transaction_key() gave None for this {type(msg).__name__}: "
                "no ACK could name it (send it with notify_unreliable())"
            )
        ep = self.ep
        key, raw = ep.encode(msg)
        if len(raw) > ep.max_datagram_size:
            raise MessageTooLarge(len(raw), ep.max_datagram_size)
        ep._attach_reply(addr, key, raw)
        serial = self._serial = self._serial + 1
        p = new_pending(NOTIFY, key, addr, raw, serial, waiter, now, now + timeout)
        p.txkey = tk
        ep.acking[serial] = p
        self.by_tx[tk] = p
        ep._schedule_first(p, policy, now)
        ep.counters.notifies += 1
        return p

    def frame_oneway(self, msg: Any, addr: Address) -> bytes:
        """:meth:`Endpoint.frame_oneway`; a reply to a delivered message is cached.

        (Its copies are then answered with it.)
        """
        ep = self.ep
        frame = type(ep).frame_oneway(ep, msg, addr)
        try:
            key = ep._key_of(msg)
        except Exception as exc:
            raise _failed("msg_key", msg, exc) from exc
        ep._attach_reply(addr, key, frame)
        return frame

    def forget(self, p: Pending) -> None:
        """``p`` has ended: no ACK or REJECT finds it any more."""
        tk = getattr(p, "txkey", None)
        if tk is not None and tk is not ACKED and self.by_tx.get(tk) is p:
            del self.by_tx[tk]

    def clear(self) -> None:
        self.by_tx.clear()
        self.failed.clear()

    # ------------------------------------------------------------------ receiving

    def receive(self, data: bytes, addr: Address, now: float) -> Pending | None:
        """:meth:`Endpoint.receive` for raw framing with the message layer."""
        ep = self.ep
        counters = ep.counters
        size = len(data)
        if size > ep.max_datagram_size:
            counters.oversize += 1
            ep.report("oversize", addr, size)
            return None
        if not size:
            counters.empty += 1
            ep.report("empty", addr, None)
            return None
        waiting = ep.waiting
        classify = self._classify
        txkey = self._txkey
        ack_for = self._ack_for
        p: Pending | None = None
        key: Hashable = None
        tk: Hashable = None
        answer: bytes | None = None
        try:
            msg = ep._from_raw(data)
            if classify is not None:
                kind = classify(msg)
                if kind not in _KINDS:
                    raise TypeError(f"classify() returned {kind!r}, not an aiodisp.Kind")
                if kind is _MESSAGE or kind is _REPLY:
                    key = ep._key_of(msg)
                    hash(key)
            else:
                key = ep._key_of(msg)
                is_reply = ep._is_reply
                if is_reply is not None:
                    kind = _REPLY if is_reply(msg) else _MESSAGE
                else:
                    p = waiting.get(key)
                    mine = p is not None and (not ep.check_source or p.addr == addr)
                    kind = _REPLY if mine else _MESSAGE
                hash(key)
            if txkey is not None and kind is not _REPLY and kind is not _DROP:
                tk = txkey(msg)
                hash(tk)
            if ack_for is not None and kind is not _ACK and kind is not _REJECT:
                reply = ack_for(msg)
                if reply is not None:
                    answer = ep._to_raw(reply)
                    if type(answer) is not bytes:
                        answer = ep._as_bytes(answer)
        except Exception as exc:
            counters.decode_errors += 1
            ep.report("decode", addr, exc)
            return None

        if kind is _MESSAGE:
            id_key: Any = None
            log = ep.log
            if tk is not None:
                id_key = (addr, tk)
                try:
                    entry = log.by_id.get(id_key)
                except TypeError:  # a custom transport reported an unhashable address
                    counters.decode_errors += 1
                    ep.report("address", addr, "unhashable sender address")
                    return None
                if entry is not None and entry[0] > now and not _same(entry[3], key):
                    # The peer reused the id for another message (CoAP's 16-bit Message
                    # IDs wrap within the dedup window past ~2,000 messages/s): it is
                    # new, and the old delivery's cached reply answers no copy of it.
                    log.forget(id_key)
                    entry = None
                if entry is not None and entry[0] > now:
                    counters.duplicates += 1
                    self._answer(answer, addr)
                    again = log.resend(entry)  # (a bounded number of times)
                    if again is not None:
                        ep.outbox.append((again, addr))
                        counters.replies_resent += 1
                    return None
            inbox = ep.inbox
            if len(inbox) >= ep.max_queue:
                counters.queue_drops += 1
                ep.report("queue full", addr, key)
                return None  # no answer: the sender retries
            inbox.append(_new_tuple(Received, (msg, size, addr)))
            counters.delivered += 1
            if id_key is not None:
                log.add(id_key, (addr, key), key, now)
            self._answer(answer, addr)
            return None

        if kind is _REPLY:
            self._answer(answer, addr)
            if p is None:
                p = waiting.get(key)
            if p is None:
                counters.unknown_replies += 1
                ep.report("unknown reply", addr, key)
                return None
            if ep.check_source and p.addr != addr:
                counters.wrong_source += 1
                ep.report("wrong source", addr, key)
                return None
            if p.accept is not None and not ep._accepted(p, msg, addr, 0, -1):
                return None
            del waiting[key]
            p.done = True
            p.frame = None
            p.result = msg
            ep.schedule.finished(p)
            self.forget(p)
            counters.replies_matched += 1
            ep._answered(p, now)  # it leaves its peer's congestion window
            # RTT samples (Karn) from a first attempt, unless an ACK gave one already
            # (a separate response's wait is the peer's, not the path's)
            if p.attempts == 1 and p.txkey is not ACKED:
                ep.rtt.sample(p.addr, now - p.sent_at)
            return p

        if kind is _DROP:
            counters.ignored += 1
            self._answer(answer, addr)
            return None

        # an ACK or a REJECT: for the call whose outgoing message had this transaction key
        q = self.by_tx.get(tk) if tk is not None else None
        if q is None or (ep.check_source and q.addr != addr):
            counters.unknown_acks += 1
            ep.report("unknown ACK" if kind is _ACK else "unknown REJECT", addr, tk)
            return None
        del self.by_tx[tk]
        if kind is _REJECT:
            ep._finish(q)
            ep.schedule.finished(q)
            q.result = PeerRejected(msg, key=q.key, addr=addr)
            counters.rejected += 1
            self.failed.append(q)
            return None
        counters.acks_received += 1
        if q.attempts == 1:
            ep.rtt.sample(q.addr, now - q.sent_at)
        if q.kind == NOTIFY:
            ep._finish(q)
            ep.schedule.finished(q)
            q.result = None
            return q
        # a request the peer has: resend nothing (handle_timer waits for the deadline)
        q.txkey = ACKED
        q.frame = None
        return None

    def _answer(self, answer: bytes | None, addr: Address) -> None:
        if answer is not None:
            self.ep.outbox.append((answer, addr))
            self.ep.counters.acks_sent += 1


def _same(kept: Hashable, key: Hashable) -> bool:
    """Whether a delivery's key and a new message's key are the same (a copy)."""
    try:
        return bool(kept == key)
    except Exception:
        return True  # a key that cannot compare: take it for the copy it seems


def _method(adapter: object, name: str) -> Any:
    method = getattr(adapter, name, None)
    return method if callable(method) else None
