"""What the receiver has already delivered: the duplicate cache and the reply cache.

A retransmitted copy of a datagram carries the packet id of the first; the log
remembers ``(sender, packet id)`` of every datagram delivered (queued for the
application or matched to a pending request) so the copy is ACKed again but not
delivered twice. For a request delivered to the application it also remembers
``(sender, key)``, so the reply the application sends with that key to that
sender can be attached and re-sent when a retransmitted copy of the request
arrives (at most :data:`MAX_REPLY_RESENDS` times: a few retransmissions, not a
replay flood).

Entries expire after ``ttl`` seconds; at most ``capacity`` are kept (when it is
reached the oldest go first, up to :data:`EVICT_BATCH` at a time). Both bounds
together limit how long "exactly once" holds: a copy that arrives after its
entry is gone is delivered again. Cached replies are also bounded in bytes
(``reply_bytes``): past it the oldest cached replies are let go, and a
retransmitted copy of their request is then dropped unanswered.

An entry is a plain tuple ``(expires, id_key, peer_key)`` and the caches are
plain dicts of tuples, bytes and ints: cheap to make, and invisible to the
cyclic garbage collector once it has looked at them once (a full log holds
100,000 entries by default; as tracked objects they would make every full
collection walk them all).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable

__all__ = ["DeliveryLog", "EVICT_BATCH", "Entry", "IdKey", "MAX_REPLY_RESENDS", "PeerKey"]

IdKey = tuple[Hashable, int]
PeerKey = tuple[Hashable, Hashable]
#: ``(expires, id_key, peer_key, key)``: one delivered datagram. ``key`` is its
#: message's key: a copy must match it too (packet ids are random and may repeat).
Entry = tuple[float, IdKey, PeerKey | None, Hashable]

#: The most entries a full log forgets at once (1/64 of a small capacity).
EVICT_BATCH = 32
#: How many retransmitted copies of one request its cached reply answers.
MAX_REPLY_RESENDS = 32


class DeliveryLog:
    """The duplicate and reply caches (see the module docstring).

    Entries are kept in a dict by ``(sender, packet id)`` for lookups and in a
    deque in arrival order: with one ``ttl`` for all, arrival order is expiry
    order, so expiring and evicting both take from the left. Replies are kept
    by the ``(sender, packet id)`` of the request they answer.
    """

    __slots__ = ("_by_key", "_order", "_replies", "_reply", "_resends", "by_id", "capacity",
                 "reply_bytes", "reply_bytes_used", "ttl")

    def __init__(
        self, *, ttl: float = 30.0, capacity: int = 100_000, reply_bytes: int = 8 << 20
    ) -> None:
        if ttl <= 0 or capacity < 1 or reply_bytes < 0:
            raise ValueError("the delivery log needs a positive ttl, capacity and reply budget")
        self.ttl = ttl
        self.capacity = capacity
        self.reply_bytes = reply_bytes
        self.reply_bytes_used = 0
        self.by_id: dict[IdKey, Entry] = {}
        # delivered requests no reply is attached to yet, by (sender, key)
        self._by_key: dict[PeerKey, Entry] = {}
        self._order: deque[Entry] = deque()
        self._reply: dict[IdKey, bytes] = {}
        # how often each cached reply was sent again (only those sent again)
        self._resends: dict[IdKey, int] = {}
        # the id keys of cached replies, oldest first (some may be gone since)
        self._replies: deque[IdKey] = deque()

    def seen(self, addr: Hashable, packet_id: int, now: float) -> Entry | None:
        """The entry of an earlier delivery of this datagram, if it is still kept."""
        entry = self.by_id.get((addr, packet_id))
        if entry is None or entry[0] <= now:
            return None
        return entry

    def record(self, addr: Hashable, packet_id: int, key: Hashable | None, now: float) -> None:
        """Remember a delivery; with ``key``, a reply to it can be attached."""
        self.add((addr, packet_id), None if key is None else (addr, key), key, now)

    def add(self, id_key: IdKey, peer_key: PeerKey | None, key: Hashable, now: float) -> None:
        """:meth:`record` for callers that hold the keys already (the receive path)."""
        order = self._order
        if order and (order[0][0] <= now or len(order) >= self.capacity):
            self.expire(now)
        entry = (now + self.ttl, id_key, peer_key, key)
        self.by_id[id_key] = entry
        order.append(entry)
        if peer_key is not None:
            self._by_key[peer_key] = entry

    def attach_reply(self, addr: Hashable, key: Hashable, datagram: bytes) -> bool:
        """Keep ``datagram`` as the reply to the delivered message with ``key`` from ``addr``."""
        entry = self.reply_entry(addr, key)
        return entry is not None and self.keep_reply(entry, datagram)

    def reply_entry(self, addr: Hashable, key: Hashable) -> Entry | None:
        """The delivery a message with ``key`` to ``addr`` answers, taken off the index.

        (The first reply is kept: the request is no longer indexed for another.)
        ``TypeError`` for an unhashable key.
        """
        return self._by_key.pop((addr, key), None)

    def keep_reply(self, entry: Entry, datagram: bytes) -> bool:
        """Keep ``datagram`` as the reply to the delivery ``entry`` (bounded in bytes)."""
        if len(datagram) > self.reply_bytes:
            return False
        id_key = entry[1]
        self._reply[id_key] = datagram
        self.reply_bytes_used += len(datagram)
        replies = self._replies
        replies.append(id_key)
        while self.reply_bytes_used > self.reply_bytes:
            self._drop_reply(replies.popleft())
        return True

    def cached_reply(self, entry: Entry) -> bytes | None:
        """The reply kept for the delivery ``entry`` records, if any."""
        return self._reply.get(entry[1])

    def resend(self, entry: Entry) -> bytes | None:
        """The cached reply to send for another copy of ``entry``'s datagram, if it may go."""
        id_key = entry[1]
        datagram = self._reply.get(id_key)
        if datagram is None:
            return None
        sent = self._resends.get(id_key, 0)
        if sent >= MAX_REPLY_RESENDS:
            return None
        self._resends[id_key] = sent + 1
        return datagram

    def forget(self, id_key: IdKey) -> None:
        """Let go of the delivery kept under ``id_key`` (another datagram reuses its id)."""
        entry = self.by_id.pop(id_key, None)
        if entry is not None:
            self._drop_reply(id_key)
            peer_key = entry[2]
            if peer_key is not None and self._by_key.get(peer_key) is entry:
                del self._by_key[peer_key]

    def _drop_reply(self, id_key: IdKey) -> None:
        datagram = self._reply.pop(id_key, None)
        if datagram is not None:
            self.reply_bytes_used -= len(datagram)
            self._resends.pop(id_key, None)

    def expire(self, now: float) -> None:
        """Forget expired entries; when full, the oldest few (up to EVICT_BATCH) at once.

        Evicting in small batches keeps a full log from paying this call on every
        delivery, without a pause long enough to show in latency (a batch of
        1,000 would cost a millisecond).
        """
        order = self._order
        by_id = self.by_id
        by_key = self._by_key
        reply = self._reply
        resends = self._resends
        limit = self.capacity - max(1, min(EVICT_BATCH, self.capacity >> 6))
        freed = 0
        while order and (order[0][0] <= now or len(order) > limit):
            entry = order.popleft()
            _, id_key, peer_key, _key = entry
            # (one look-up each: this runs once per delivery when the log is full)
            kept = by_id.pop(id_key, None)
            if kept is entry:
                datagram = reply.pop(id_key, None)
                if datagram is not None:
                    freed += len(datagram)
                    if resends:
                        resends.pop(id_key, None)
            elif kept is not None:  # a later copy was delivered again: it stays
                by_id[id_key] = kept
            if peer_key is not None and by_key.get(peer_key) is entry:
                del by_key[peer_key]
        self.reply_bytes_used -= freed
        # entries leave in about the order they cached replies: trim the front
        replies = self._replies
        while replies and replies[0] not in reply:
            replies.popleft()

    def __len__(self) -> int:
        return len(self._order)

    @property
    def replies_indexed(self) -> int:
        return len(self._by_key)

    @property
    def replies_cached(self) -> int:
        return len(self._reply)
