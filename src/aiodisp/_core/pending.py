"""One call in flight: a request waiting for its reply, or a notify waiting for its ACK."""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any

from ..retry import RetryPolicy
from .schedule import Lane

__all__ = ["NOTIFY", "REQUEST", "Pending", "new_pending"]

Address = Any

#: ``Pending.kind`` of a request (waits for a reply) ...
REQUEST = 0
#: ... and of a notify (waits for an ACK).
NOTIFY = 1


class Pending:
    """One call waiting for its reply (request) or its ACK (notify)."""

    __slots__ = (
        "accept",
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
        "last_sent",
        "packet_id",
        "peer",
        "policy",
        "result",
        "sent_at",
        "txkey",
        "waiter",
    )
    # Set only when used (an unset slot costs no store, but 8 B in every Pending:
    # a slot only some calls need is a cost to all, issue 14): interval by a
    # retry policy, result on completion, txkey by the message
    # layer (the transaction key of the call's outgoing message), last_sent by
    # a retransmission (when the last copy went), peer by the endpoint (the
    # call's place in its peer's congestion window, .congestion.Peer).
    interval: float
    result: Any
    txkey: Hashable | None
    last_sent: float
    peer: Any

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
    #: a request's ``accept(reply) -> bool`` (None: any reply with its key and source)
    accept: Callable[[Any], bool] | None
    due: float
    done: bool
    lane: Lane | None

    def __lt__(self, other: Pending) -> bool:
        # Only a tie of the schedule's heap entries (due, packet id) compares calls:
        # packet ids are random and unique among pending calls, so a tie needs a
        # finished call's stale entry with a new call's id and due, and then any
        # order will do (.schedule.Schedule.add).
        return id(self) < id(other)


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
    p.accept = None
    p.due = deadline
    p.done = False
    p.lane = None
    return p
