"""What the receiver has already delivered: the duplicate cache and the reply cache.

A retransmitted copy of a datagram carries the packet id of the first; the log
remembers ``(sender, packet id)`` of every datagram delivered (queued for the
application or matched to a pending request) so the copy is ACKed again but not
delivered twice. For a request delivered to the application it also remembers
``(sender, key)``, so the reply the application sends with that key to that
sender can be attached and re-sent when a retransmitted copy of the request
arrives.

Entries expire after ``ttl`` seconds; at most ``capacity`` are kept (when it is
reached the oldest go first, 1/64 of the capacity at a time). Both bounds
together limit how long "exactly once" holds: a copy that arrives after its
entry is gone is delivered again. Cached replies are
also bounded in bytes (``reply_bytes``): past it the oldest cached replies are
let go, and a retransmitted copy of their request is then dropped unanswered.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable

IdKey = tuple[Hashable, int]
PeerKey = tuple[Hashable, Hashable]


_alloc = object.__new__


class Record:
    """One delivered datagram; ``reply`` is the datagram the application answered with."""

    __slots__ = ("expires", "id_key", "peer_key", "reply", "resends")
    # Made by DeliveryLog.add() only (no __init__: see there).
    expires: float
    id_key: IdKey
    peer_key: PeerKey | None
    reply: bytes | None
    resends: int


class DeliveryLog:
    """The duplicate and reply caches (see the module docstring).

    Records are kept in a plain dict for lookups and a deque in arrival order:
    with one ``ttl`` for all, arrival order is expiry order, so expiring and
    evicting both take from the left.
    """

    __slots__ = ("_by_key", "_order", "_replies", "by_id", "capacity", "reply_bytes",
                 "reply_bytes_used", "ttl")

    def __init__(
        self, *, ttl: float = 30.0, capacity: int = 100_000, reply_bytes: int = 8 << 20
    ) -> None:
        if ttl <= 0 or capacity < 1 or reply_bytes < 0:
            raise ValueError("the delivery log needs a positive ttl, capacity and reply budget")
        self.ttl = ttl
        self.capacity = capacity
        self.reply_bytes = reply_bytes
        self.reply_bytes_used = 0
        self.by_id: dict[IdKey, Record] = {}
        self._by_key: dict[PeerKey, Record] = {}
        self._order: deque[Record] = deque()
        # records holding a reply, oldest first (some may have let theirs go since)
        self._replies: deque[Record] = deque()

    def seen(self, addr: Hashable, packet_id: int, now: float) -> Record | None:
        """The record of an earlier delivery of this datagram, if it is still kept."""
        rec = self.by_id.get((addr, packet_id))
        if rec is None or rec.expires <= now:
            return None
        return rec

    def record(self, addr: Hashable, packet_id: int, key: Hashable | None, now: float) -> None:
        """Remember a delivery; with ``key``, a reply to it can be attached."""
        self.add((addr, packet_id), None if key is None else (addr, key), now)

    def add(self, id_key: IdKey, peer_key: PeerKey | None, now: float) -> None:
        """:meth:`record` for callers that hold the keys already (the receive path)."""
        order = self._order
        if order and (order[0].expires <= now or len(order) >= self.capacity):
            self._expire(now)
        # Record(...), inlined: calling a class with a Python __init__ costs three times this
        rec: Record = _alloc(Record)
        rec.expires = now + self.ttl
        rec.id_key = id_key
        rec.peer_key = peer_key
        rec.reply = None
        rec.resends = 0
        self.by_id[id_key] = rec
        order.append(rec)
        if peer_key is not None:
            self._by_key[peer_key] = rec

    def attach_reply(self, addr: Hashable, key: Hashable, datagram: bytes) -> bool:
        """Keep ``datagram`` as the reply to the delivered message with ``key`` from ``addr``."""
        rec = self._by_key.get((addr, key))
        if rec is None or rec.reply is not None or len(datagram) > self.reply_bytes:
            return False
        rec.reply = datagram
        self.reply_bytes_used += len(datagram)
        replies = self._replies
        replies.append(rec)
        while self.reply_bytes_used > self.reply_bytes:
            self._drop_reply(replies.popleft())
        return True

    def _drop_reply(self, rec: Record) -> None:
        if rec.reply is not None:
            self.reply_bytes_used -= len(rec.reply)
            rec.reply = None

    def _expire(self, now: float) -> None:
        """Forget expired records; when full, the oldest 1/64 of the capacity at once.

        Evicting in batches keeps a full log from paying this call on every
        delivery: the batch is the most "exactly once" shortens early.
        """
        order = self._order
        by_id = self.by_id
        by_key = self._by_key
        limit = self.capacity - max(1, self.capacity >> 6)
        while order and (order[0].expires <= now or len(order) > limit):
            rec = order.popleft()
            if by_id.get(rec.id_key) is rec:
                del by_id[rec.id_key]
            peer_key = rec.peer_key
            if peer_key is not None and by_key.get(peer_key) is rec:
                del by_key[peer_key]
            if rec.reply is not None:
                self._drop_reply(rec)
        # records leave in about the order they cached replies: trim the front
        replies = self._replies
        while replies and replies[0].reply is None:
            replies.popleft()

    def __len__(self) -> int:
        return len(self._order)

    @property
    def replies_indexed(self) -> int:
        return len(self._by_key)
