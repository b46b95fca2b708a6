"""Counters a dispatcher keeps, and the frozen snapshot users read."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

__all__ = ["Counters", "Stats"]


@dataclass(frozen=True, slots=True)
class Stats:
    """A snapshot of a dispatcher's counters (``Dispatcher.stats``).

    Every datagram that is not delivered or used lands in exactly one of the
    drop counters, so a flood can be accounted for.
    """

    #: datagrams handed to the transport (first sends, retransmissions, ACKs, cached replies)
    sent: int = 0
    #: datagrams read from the transport; each lands in exactly one of: replies_matched,
    #: acks_received, delivered, or one of the drop counters below
    received: int = 0
    #: request() calls that sent their first datagram
    requests: int = 0
    #: notify() and notify_unreliable() calls that sent their first datagram
    notifies: int = 0
    #: datagrams sent again by a retry policy
    retransmissions: int = 0
    #: retransmissions the retry budget refused (not sent; the call kept waiting)
    budget_denied: int = 0
    #: requests completed by their reply
    replies_matched: int = 0
    #: ACKs that completed a notify() call, or (the adapter's ACKs, raw framing) that
    #: stopped a request's retransmission
    acks_received: int = 0
    #: ACKs this dispatcher sent
    acks_sent: int = 0
    #: calls that ended in RequestTimeout (retries spent or timeout passed)
    timeouts: int = 0
    #: calls cancelled by their caller while waiting
    cancelled: int = 0
    #: calls failed at once by the kernel's ICMP port unreachable (PeerUnreachable)
    unreachable: int = 0
    #: messages queued for recv_from
    delivered: int = 0
    #: messages handed to recv_from
    consumed: int = 0
    # -- drops --
    #: replies whose key has no pending request (late, duplicate, unsolicited)
    unknown_replies: int = 0
    #: replies with a pending key that came from another address than the request went to
    wrong_source: int = 0
    #: ACKs (and the adapter's REJECTs) for no pending call, or from the wrong address
    unknown_acks: int = 0
    #: messages the adapter classified DROP (nothing to do; not logged)
    ignored: int = 0
    #: replies with a pending key and source that the request's accept= refused
    unaccepted: int = 0
    #: calls failed at once by the peer's REJECT (aiodisp.PeerRejected)
    rejected: int = 0
    #: datagrams whose framing header was missing or malformed
    header_errors: int = 0
    #: datagrams the adapter could not decode (raw_to_msg, msg_key, is_reply, classify,
    #: transaction_key or ack_for raised)
    decode_errors: int = 0
    #: empty datagrams
    empty: int = 0
    #: datagrams larger than the transport's limit
    oversize: int = 0
    #: retransmitted copies of datagrams already delivered (ACKed again, not delivered)
    duplicates: int = 0
    #: cached replies sent again for a retransmitted request
    replies_resent: int = 0
    #: messages dropped because the incoming queue was full (not ACKed)
    queue_drops: int = 0
    #: queued messages discarded by close()
    discarded_on_close: int = 0
    #: errors the transport reported (ICMP errors, failed sends)
    transport_errors: int = 0
    #: datagrams sent that carried several messages and ACKs (``coalesce=True``);
    #: ``sent`` counts each message and ACK in them
    bundles_sent: int = 0
    #: bundles received; ``received`` counts each datagram in them
    bundles_received: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


STAT_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(Stats))
#: ``sent`` is the sum of these (every datagram sent is exactly one of them) ...
SENT_PARTS = ("requests", "notifies", "retransmissions", "acks_sent", "replies_resent")
#: ... and ``received`` the sum of these: the hot paths bump one counter, not two.
RECEIVED_PARTS = (
    "replies_matched", "acks_received", "delivered", "unknown_replies", "wrong_source",
    "unknown_acks", "header_errors", "decode_errors", "empty", "oversize", "duplicates",
    "queue_drops", "ignored", "unaccepted", "rejected",
)
#: Counted directly; ``sent``, ``received`` and ``consumed`` are derived from the others.
COUNTED = tuple(name for name in STAT_FIELDS if name not in ("sent", "received", "consumed"))


class Counters:
    """The mutable counters behind :class:`Stats` (plain slots: cheap to bump)."""

    __slots__ = (*COUNTED, "served")

    requests: int
    notifies: int
    retransmissions: int
    budget_denied: int
    unreachable: int
    replies_matched: int
    acks_received: int
    acks_sent: int
    timeouts: int
    cancelled: int
    delivered: int
    unknown_replies: int
    wrong_source: int
    unknown_acks: int
    ignored: int
    unaccepted: int
    rejected: int
    header_errors: int
    decode_errors: int
    empty: int
    oversize: int
    duplicates: int
    replies_resent: int
    queue_drops: int
    discarded_on_close: int
    transport_errors: int
    bundles_sent: int
    bundles_received: int
    #: messages an inline server's direct receiver (``aiodisp._serve``) answered:
    #: each one delivered and one notify, counted once (one counter bumped a query,
    #: not two: ~300 instructions each)
    served: int

    def __init__(self) -> None:
        for name in COUNTED:
            setattr(self, name, 0)
        self.served = 0

    @property
    def sent(self) -> int:
        total: int = sum(getattr(self, name) for name in SENT_PARTS)
        return total + self.served

    @property
    def received(self) -> int:
        total: int = sum(getattr(self, name) for name in RECEIVED_PARTS)
        return total + self.served

    def snapshot(self, *, queued: int = 0) -> Stats:
        """The counters now; ``queued`` messages are delivered but not yet consumed."""
        values = {name: getattr(self, name) for name in COUNTED}
        values["delivered"] += self.served
        values["notifies"] += self.served
        consumed = values["delivered"] - queued - self.discarded_on_close
        return Stats(sent=self.sent, received=self.received, consumed=consumed, **values)
