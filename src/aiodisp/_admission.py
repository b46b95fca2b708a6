"""Admission: callers that wait their turn, first come first served.

The driver hands out a few things one at a time: room among the dispatcher's
``max_pending`` calls in flight, and an incoming message to a reader (room in
each peer's congestion window comes next). A caller that finds none waits in a
:class:`Waiters` queue; whoever frees one wakes the first in line.

The one subtle rule lives here, once: a waiter that was woken but leaves
without taking its turn (it was cancelled, or its timeout fired in the same
loop iteration) passes the wake-up on to the next in line, so no turn is lost
and nobody waits for room that is free.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

__all__ = ["Room", "Waiters"]


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
                self.wake(1)  # woken, but leaving: the turn goes to the next in line
            else:
                fut.cancel()
                try:
                    queue.remove(fut)
                except ValueError:
                    pass  # woken by wake_all() meanwhile
            raise

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

    @property
    def full(self) -> bool:
        return self._in_flight() >= self.limit

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
