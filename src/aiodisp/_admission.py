"""Admission: callers that wait their turn, first come first served.

The driver hands out a few things one at a time: room among the dispatcher's
``max_pending`` calls in flight, an incoming message to a reader, and room in
each peer's congestion window (:class:`PeerWindows`: a queue per peer, whose
room the core says). A caller that finds none waits in a :class:`Waiters`
queue; whoever frees one wakes the first in line.

The one subtle rule lives here, once: a waiter that was woken but leaves
without taking its turn (it was cancelled, or its timeout fired in the same
loop iteration) passes the wake-up on to the next in line, so no turn is lost
and nobody waits for room that is free.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Any

__all__ = ["PeerWindows", "Room", "Waiters"]


class Waiters:
    """A FIFO of callers waiting for a turn (see the module docstring).

    :attr:`queue` holds the waiting callers' futures. The driver tests it for
    emptiness on its hot paths (once per datagram): a ``__bool__`` method would
    cost a Python frame there.
    """

    __slots__ = ("_loop", "queue")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.queue: deque[asyncio.Future[None]] = deque()

    async def wait(self, deadline: float | None = None) -> None:
        """Wait to be woken; ``TimeoutError`` at ``deadline`` (loop time), if given.

        Leaving early (cancelled, timed out) removes the waiter from the queue, or
        passes its wake-up on if it had one already.
        """
        fut: asyncio.Future[None] = self._loop.create_future()
        queue = self.queue
        queue.append(fut)
        try:
            if deadline is None:
                await fut
            else:
                async with asyncio.timeout_at(deadline):
                    await fut
        except BaseException:
            if fut.done() and not fut.cancelled():
                self._pass_on()  # woken, but leaving: the turn goes to the next in line
            else:
                fut.cancel()
                try:
                    queue.remove(fut)
                except ValueError:
                    pass  # woken by wake_all() meanwhile
            raise

    def _pass_on(self) -> None:
        self.wake(1)

    def wake(self, n: int = 1) -> None:
        """Wake the first ``n`` callers still waiting."""
        queue = self.queue
        while queue and n > 0:
            fut = queue.popleft()
            if not fut.done():
                fut.set_result(None)
                n -= 1

    def wake_all(self) -> None:
        """Wake everyone (closing: each sees the closed state and leaves)."""
        queue = self.queue
        while queue:
            fut = queue.popleft()
            if not fut.done():
                fut.set_result(None)


class Room:
    """At most ``limit`` calls in flight at once; a call past it waits its turn.

    ``in_flight()`` says how many calls are in flight now. The driver checks
    ``in_flight() >= limit`` inline on its hot path and calls :meth:`wait` only
    when that is true; when a call ends it calls :meth:`freed` if :attr:`waiting`
    (the waiters' futures, tested for emptiness in C) is not empty.
    """

    __slots__ = ("_in_flight", "_waiters", "limit", "waiting")

    def __init__(
        self, loop: asyncio.AbstractEventLoop, limit: int, in_flight: Callable[[], int]
    ) -> None:
        if limit < 1:
            raise ValueError("max_pending must be at least 1")
        self.limit = limit
        self._in_flight = in_flight
        self._waiters = Waiters(loop)
        self.waiting = self._waiters.queue

    async def wait(self, deadline: float, closed: Callable[[], bool]) -> None:
        """Return once a call may start (``TimeoutError`` at ``deadline``).

        Returns early, with room or not, once ``closed()`` is true: the caller
        checks that itself.
        """
        while self._in_flight() >= self.limit and not closed():
            await self._waiters.wait(deadline)

    def freed(self) -> None:
        """Calls ended: wake as many waiters as there is room for."""
        free = self.limit - self._in_flight()
        if free > 0:
            self._waiters.wake(free)

    def release_all(self) -> None:
        """Wake every waiter (the dispatcher is closing)."""
        self._waiters.wake_all()


class _PeerQueue(Waiters):
    """The callers waiting for one peer's window; ``woken`` of them hold a place
    that they have not taken yet (woken, not yet started)."""

    __slots__ = ("woken",)

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(loop)
        self.woken = 0

    def wake(self, n: int = 1) -> None:
        queue = self.queue
        while queue and n > 0:
            fut = queue.popleft()
            if not fut.done():
                fut.set_result(None)
                n -= 1
                self.woken += 1

    def _pass_on(self) -> None:
        self.woken -= 1  # the place this waiter leaves ...
        self.wake(1)  # ... goes to the next in line


class PeerWindows:
    """Calls waiting for room in their peer's congestion window, first come first served.

    The core decides: ``room(addr)`` is how many more calls its window lets
    start to ``addr`` now; ``begins(addr)`` and ``ends(addr)`` tell it that a
    call starts and stops waiting (it counts waiting calls as using the window,
    and sends new calls to the back of the queue while any wait). The driver
    waits here when the core says a peer is throttled, starts its call as soon
    as :meth:`wait` returns (with no ``await`` between), and calls
    :meth:`freed` when a call to a peer with waiters ends. :attr:`waiting` (the
    queues by peer) is tested for emptiness on the hot path.
    """

    __slots__ = ("_begins", "_ends", "_loop", "_room", "waiting")

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        room: Callable[[Any], int],
        begins: Callable[[Any], None],
        ends: Callable[[Any], None],
    ) -> None:
        self._loop = loop
        self._room = room
        self._begins = begins
        self._ends = ends
        self.waiting: dict[Any, _PeerQueue] = {}

    async def wait(self, addr: Any, deadline: float) -> None:
        """Return once a call to ``addr`` may start (``TimeoutError`` at ``deadline``).

        The caller must start its call at once (the place is held for it), or
        check the dispatcher's closed state: closing wakes every waiter.
        """
        waiting = self.waiting
        queue = waiting.get(addr)
        if queue is None:
            if self._room(addr) > 0:
                return  # room, and nobody waits: the turn is this caller's
            queue = waiting[addr] = _PeerQueue(self._loop)
        elif not queue.queue and self._room(addr) - queue.woken > 0:
            return  # room that no woken caller holds, and nobody ahead
        self._begins(addr)
        try:
            await queue.wait(deadline)
            queue.woken -= 1  # the place is taken: the caller starts now
        finally:
            self._ends(addr)
            if not queue.queue and queue.woken <= 0 and waiting.get(addr) is queue:
                del waiting[addr]

    def freed(self, addr: Any) -> None:
        """Calls to ``addr`` ended or its window grew: wake as many as it has room for."""
        queue = self.waiting.get(addr)
        if queue is not None:
            room = self._room(addr) - queue.woken
            if room > 0:
                queue.wake(room)

    def release_all(self) -> None:
        """Wake every waiter (the dispatcher is closing)."""
        for queue in list(self.waiting.values()):
            queue.wake_all()
