"""One bounded send queue per destination that cannot take a datagram now.

A Unix datagram socket makes the sender wait (EAGAIN) while the *receiving*
socket's queue is full; a UDP socket does when its own send buffer is. One
peer that stops reading must not hold up the datagrams for every other peer,
so a destination gets a queue of its own the first time a send to it would
block, and loses it once the queue has drained. A send to a destination with
no queue goes straight to the kernel.

Bounds, per destination and in all:

* ``high_water``: :meth:`PeerQueues.put` reports "blocked" once this many
  datagrams wait for the destination (the caller should ``await
  wait_writable(addr)``, which returns below half of it); a best-effort
  datagram (an ACK, a cached or inline reply) is dropped rather than queued
  past it.
* ``max_per_peer``: a datagram past it is refused with :class:`TransportError`
  (its ``errno`` is EAGAIN: "not now").
* ``max_bytes``: the bytes queued for all destinations together; past it, the
  same.

Retries run on one timer for all queues. Each queue is retried 0.5 ms after
it blocked, then after twice as long each time nothing went out, up to
:data:`RETRY_MAX` (``poll()`` cannot say when an unconnected Unix datagram
peer has room again); queues due within :data:`COALESCE` of each other are
retried on the same expiry, so many stuck peers cost one timer, not many.
"""

from __future__ import annotations

import asyncio
import errno
import math
from collections import deque
from collections.abc import Callable

from ..errors import TransportError
from .addresses import transport_error
from .base import Address

__all__ = ["BLOCKED", "COALESCE", "PeerQueue", "PeerQueues", "RETRY_FIRST", "RETRY_MAX"]

RETRY_FIRST = 0.0005
RETRY_MAX = 0.05
COALESCE = 0.002

#: The errnos that say "the kernel cannot take this datagram now".
BLOCKED = frozenset({errno.EAGAIN, errno.EWOULDBLOCK, errno.ENOBUFS})


class PeerQueue:
    """The datagrams waiting for one destination, and the calls waiting for room."""

    __slots__ = ("datagrams", "delay", "due", "waiters")

    def __init__(self, due: float) -> None:
        self.datagrams: deque[bytes] = deque()
        self.delay = RETRY_FIRST
        self.due = due
        self.waiters: set[asyncio.Future[None]] | None = None


class PeerQueues:
    """The queues of one socket. ``queues`` is empty while nothing is blocked."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        sendto: Callable[[bytes, Address], object],
        report: Callable[[Exception], None],
        *,
        high_water: int,
        max_per_peer: int,
        max_bytes: int,
    ) -> None:
        if high_water < 1 or max_per_peer < high_water or max_bytes < 1:
            raise ValueError(
                "need 1 <= high_water <= max_queued_per_peer and max_queued_bytes >= 1"
            )
        self.queues: dict[Address, PeerQueue] = {}
        self._loop = loop
        self._sendto = sendto
        self._report = report
        self.high_water = high_water
        self.low_water = max(high_water // 2, 1)
        self.max_per_peer = max_per_peer
        self.max_bytes = max_bytes
        self.datagrams = 0
        self.bytes = 0
        self.dropped = 0
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = math.inf
        self._all_waiters: set[asyncio.Future[None]] = set()
        self._closed = False

    # -- adding

    def start(self, addr: Address) -> PeerQueue:
        """A queue for ``addr``, whose send just hit EAGAIN; its first retry is armed."""
        q = PeerQueue(self._loop.time() + RETRY_FIRST)
        self.queues[addr] = q
        self._arm(q.due)
        return q

    def put(self, q: PeerQueue, data: bytes, addr: Address) -> bool:
        """Queue ``data`` (or raise when full); True when the caller should wait for room."""
        n = len(q.datagrams)
        if n >= self.max_per_peer:
            raise _full(f"{n} datagrams already wait for {addr!r}")
        size = len(data)
        if self.bytes + size > self.max_bytes:
            raise _full(f"{self.bytes} bytes already wait in the send queues")
        q.datagrams.append(data)
        self.datagrams += 1
        self.bytes += size
        return n + 1 >= self.high_water

    def put_best_effort(self, q: PeerQueue, data: bytes) -> bool:
        """Queue ``data`` if the destination is below its high-water mark; False: dropped."""
        size = len(data)
        if len(q.datagrams) >= self.high_water or self.bytes + size > self.max_bytes:
            self.dropped += 1
            return False
        q.datagrams.append(data)
        self.datagrams += 1
        self.bytes += size
        return True

    # -- draining

    def _arm(self, when: float) -> None:
        if when < self._timer_at:
            if self._timer is not None:
                self._timer.cancel()
            self._timer_at = when
            self._timer = self._loop.call_at(when, self._retry)

    def _retry(self) -> None:
        self._timer = None
        self._timer_at = math.inf
        now = self._loop.time()
        horizon = now + COALESCE
        low = self.low_water
        next_due = math.inf
        queues = self.queues
        for addr, q in list(queues.items()):
            if q.due > horizon:
                next_due = min(next_due, q.due)
                continue
            progressed = self._drain(addr, q)
            if not q.datagrams:
                del queues[addr]
                _wake(q.waiters)
                continue
            q.delay = RETRY_FIRST if progressed else min(q.delay * 2, RETRY_MAX)
            q.due = now + q.delay
            next_due = min(next_due, q.due)
            if q.waiters and len(q.datagrams) < low:
                _wake(q.waiters)
        if self._all_waiters and self.has_room():
            _wake(self._all_waiters)
        if queues:
            self._arm(next_due)

    def _drain(self, addr: Address, q: PeerQueue) -> bool:
        """Send what ``addr`` takes now; True if anything went out."""
        datagrams = q.datagrams
        sendto = self._sendto
        sent = False
        while datagrams:
            data = datagrams[0]
            try:
                sendto(data, addr)
            except OSError as exc:
                if exc.errno in BLOCKED:
                    return sent
                # The destination is gone (ECONNREFUSED: nobody bound there any more…):
                # what waits for it cannot be sent either.
                lost = len(datagrams)
                self._forget(datagrams)
                err = TransportError(
                    f"dropped {lost} queued datagram(s) for {addr!r}: {exc}"
                )
                err.errno = exc.errno
                err.__cause__ = exc
                self._report(err)
                return sent
            datagrams.popleft()
            self.datagrams -= 1
            self.bytes -= len(data)
            sent = True
        return sent

    def _forget(self, datagrams: deque[bytes]) -> None:
        self.datagrams -= len(datagrams)
        self.bytes -= sum(map(len, datagrams))
        datagrams.clear()

    # -- waiting

    def has_room(self) -> bool:
        """True when no destination's queue is at or past its low-water mark."""
        low = self.low_water
        return all(len(q.datagrams) < low for q in self.queues.values())

    async def wait_writable(self, addr: Address | None = None) -> None:
        """Return once ``addr``'s queue (None: every queue) is below the low-water mark."""
        while not self._closed:
            if addr is None:
                if self.has_room():
                    return
                waiters = self._all_waiters
            else:
                try:
                    q = self.queues.get(addr)
                except TypeError:
                    return  # an unhashable address has no queue; send() will say why
                if q is None or len(q.datagrams) < self.low_water:
                    return
                if q.waiters is None:
                    q.waiters = set()
                waiters = q.waiters
            fut = self._loop.create_future()
            waiters.add(fut)
            try:
                await fut
            finally:
                waiters.discard(fut)

    def waiting(self) -> int:
        """How many calls wait for room now (a bound check for tests)."""
        return len(self._all_waiters) + sum(len(q.waiters or ()) for q in self.queues.values())

    def close(self) -> None:
        """Drop every queued datagram and wake every waiter (they see the transport closed)."""
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at = math.inf
        for q in self.queues.values():
            _wake(q.waiters)
        self.queues.clear()
        self.datagrams = self.bytes = 0
        _wake(self._all_waiters)


def _wake(waiters: set[asyncio.Future[None]] | None) -> None:
    if waiters:
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)


def _full(why: str) -> TransportError:
    exc = transport_error(f"the send queue is full ({why}); dropped", errno.EAGAIN)
    exc.__cause__ = BlockingIOError(errno.EAGAIN, "send queue full")
    return exc
