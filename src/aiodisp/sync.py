"""The blocking facade: a dispatcher for threaded code, with the same calls and errors.

Each ``open_*`` function starts a private event-loop thread, opens an asyncio
:class:`~aiodisp.Dispatcher` on it and returns a :class:`SyncDispatcher` whose
methods block the calling thread until the call on the loop finishes. Any
number of threads may call one ``SyncDispatcher`` at once; the calls run
concurrently on the loop (sixteen threads waiting on sixteen requests cost
sixteen blocked threads and one event loop). Errors are the same objects the
async calls raise (:class:`~aiodisp.RequestTimeout` and the rest); timeouts are
in seconds, and ``timeout=None`` means the dispatcher's default (5 s).

:meth:`SyncDispatcher.close` is idempotent and safe from any thread: calls
waiting in other threads raise :class:`~aiodisp.DispatcherClosed`, then the loop
thread stops and is joined. ``uvloop=True`` runs the loop on uvloop (the
``aiodisp[speed]`` extra).

Do not call a ``SyncDispatcher`` from a coroutine running on an event loop:
use the async API there.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import threading
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from types import TracebackType
from typing import Any, Generic, ParamSpec, Self, TypeVar

from . import Dispatcher, Framing, Link, MessageAdapter, Received, RetryPolicy, Stats
from . import open_memory_pair as _open_memory_pair
from . import open_udp as _open_udp
from . import open_unix as _open_unix
from ._transports.base import Address
from .errors import DispatcherClosed

__all__ = ["SyncDispatcher", "open_memory_pair", "open_udp", "open_unix"]

M = TypeVar("M")
T = TypeVar("T")
P = ParamSpec("P")

#: How long closing waits for calls still running on the loop before cancelling them.
_DRAIN_TIMEOUT = 5.0


class _LoopThread:
    """An event loop running in a daemon thread, shared by the dispatchers opened on it.

    It stops (and its thread is joined) when the last of them releases it.
    """

    def __init__(self, *, uvloop: bool = False, users: int = 1) -> None:
        factory: Callable[[], asyncio.AbstractEventLoop] | None = None
        if uvloop:
            try:
                import uvloop as _uvloop
            except ImportError as exc:
                raise ImportError(
                    "uvloop=True needs the uvloop package: pip install 'aiodisp[speed]'"
                ) from exc
            factory = _uvloop.new_event_loop
        self._factory = factory
        self._users = users
        self._lock = threading.Lock()
        self._started = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="aiodisp-sync", daemon=True)
        self._thread.start()
        self._started.wait()
        if self._failure is not None:
            self._thread.join()
            raise self._failure

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        assert self._loop is not None
        return self._loop

    @property
    def in_loop_thread(self) -> bool:
        return threading.current_thread() is self._thread

    def _run(self) -> None:
        try:
            with asyncio.Runner(loop_factory=self._factory) as runner:
                runner.run(self._main())
        except BaseException as exc:  # a loop that cannot start: report it to __init__
            if not self._started.is_set():
                self._failure = exc
                self._started.set()
            else:
                raise

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self._started.set()
        await self._stop.wait()
        # Calls still running fail fast on a closed dispatcher; give them the time to.
        me = asyncio.current_task()
        others = [t for t in asyncio.all_tasks() if t is not me]
        if others:
            await asyncio.wait(others, timeout=_DRAIN_TIMEOUT)
        # asyncio.Runner cancels and awaits whatever is left.

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def release(self) -> None:
        """One user is done; the last one stops the loop and joins its thread."""
        with self._lock:
            self._users -= 1
            last = self._users == 0
        if last:
            assert self._stop is not None
            self.loop.call_soon_threadsafe(self._stop.set)
            self._thread.join()


def _wait(fut: concurrent.futures.Future[T]) -> T:
    try:
        return fut.result()
    except BaseException:
        fut.cancel()  # interrupted (KeyboardInterrupt…): stop the call on the loop too
        raise


async def _next_or_none(d: Dispatcher[M]) -> Received[M] | None:
    try:
        return await anext(d)
    except StopAsyncIteration:
        return None


async def _window(d: Dispatcher[Any], addr: Address) -> int | None:
    return d.window(addr)


async def _stats(d: Dispatcher[Any]) -> Stats:
    return d.stats


class SyncDispatcher(Generic[M]):
    """A :class:`~aiodisp.Dispatcher` driven from blocking code; see the module docs."""

    def __init__(self, dispatcher: Dispatcher[M], runner: _LoopThread) -> None:
        self._d = dispatcher
        self._runner = runner
        self._lock = threading.Lock()
        self._closed = False
        self._close_done = threading.Event()

    @property
    def dispatcher(self) -> Dispatcher[M]:
        """The asyncio dispatcher underneath (use it only on :attr:`loop`)."""
        return self._d

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The private event loop the dispatcher runs on."""
        return self._runner.loop

    @property
    def local_addr(self) -> Address:
        """Where peers reach this dispatcher."""
        return self._d.local_addr

    @property
    def framing(self) -> Framing:
        """``"ack"`` or ``"raw"``, as the dispatcher was opened."""
        return self._d.framing

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def stats(self) -> Stats:
        """A snapshot of the dispatcher's counters (still readable after close)."""
        try:
            return self._call(_stats, self._d)
        except DispatcherClosed:
            self._close_done.wait()
            return self._d.stats

    def window(self, addr: Address) -> int | None:
        """The calls that may be in flight to ``addr`` now (see :meth:`Dispatcher.window`)."""
        return self._call(_window, self._d, addr)

    def _call(
        self, fn: Callable[P, Coroutine[Any, Any, T]], *args: P.args, **kw: P.kwargs
    ) -> T:
        if self._runner.in_loop_thread:
            raise RuntimeError(
                "a SyncDispatcher was called from its own event loop; use the async API there"
            )
        if _loop_running_here():
            name = getattr(fn, "__name__", "call")
            name = {"_stats": "stats", "_next_or_none": "__next__"}.get(name, name)
            raise RuntimeError(
                f"SyncDispatcher.{name}() was called from a coroutine running on an event loop: "
                "it would block that loop until the call ends; use the async API there "
                "(await it on an aiodisp.Dispatcher opened on that loop)"
            )
        with self._lock:  # no new call may start once close() has begun
            if self._closed:
                raise DispatcherClosed()
            fut = self._runner.submit(fn(*args, **kw))
        return _wait(fut)

    def request(
        self,
        msg: M,
        addr: Address,
        *,
        timeout: float | None = None,
        retry: RetryPolicy | None = None,
        accept: Callable[[M], bool] | None = None,
    ) -> M:
        """Send ``msg`` to ``addr`` and return the reply (see :meth:`Dispatcher.request`).

        ``accept`` runs on the dispatcher's event-loop thread, for each reply.
        """
        return self._call(self._d.request, msg, addr, timeout=timeout, retry=retry,
                          accept=accept)

    def notify(
        self,
        msg: M,
        addr: Address,
        *,
        timeout: float | None = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        """Send ``msg`` reliably (see :meth:`Dispatcher.notify`)."""
        self._call(self._d.notify, msg, addr, timeout=timeout, retry=retry)

    def notify_unreliable(self, msg: M, addr: Address) -> None:
        """Send ``msg`` once, confirming nothing."""
        self._call(self._d.notify_unreliable, msg, addr)

    def recv_from(self, timeout: float | None = None) -> Received[M]:
        """The next message that is not a reply: ``Received(msg, size, addr)``."""
        return self._call(self._d.recv_from, timeout)

    def __iter__(self) -> Iterator[Received[M]]:
        """Every incoming message that is not a reply, until the dispatcher closes."""
        while True:
            try:
                received = self._call(_next_or_none, self._d)
            except DispatcherClosed:
                return
            if received is None:
                return
            yield received

    def serve(
        self,
        handler: Callable[[M, Address], M | None],
        *,
        concurrency: int = 16,
    ) -> None:
        """Answer every incoming message with ``handler(msg, addr)`` until closed.

        The handler is a plain function, run in a pool of ``concurrency``
        threads; what it returns (unless None) is sent back to the sender. A
        handler that raises is counted and logged, never fatal (see
        :meth:`Dispatcher.serve`). Blocks until :meth:`close` is called from
        another thread; handlers still running then finish first.
        """
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        pool = ThreadPoolExecutor(concurrency, thread_name_prefix="aiodisp-handler")
        try:
            self._call(self._serve, handler, pool, concurrency)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    async def _serve(
        self,
        handler: Callable[[M, Address], M | None],
        pool: ThreadPoolExecutor,
        concurrency: int,
    ) -> None:
        loop = asyncio.get_running_loop()

        async def in_thread(msg: M, addr: Address) -> M | None:
            return await loop.run_in_executor(pool, handler, msg, addr)

        await self._d.serve(in_thread, concurrency=concurrency)

    def close(self) -> None:
        """Close the dispatcher and stop the loop thread; idempotent, from any thread."""
        if self._runner.in_loop_thread:
            raise RuntimeError(
                "a SyncDispatcher was closed from its own event loop; close it from another thread"
            )
        with self._lock:
            first = not self._closed
            self._closed = True
        if not first:
            self._close_done.wait()
            return
        try:
            _wait(self._runner.submit(self._d.close()))
        finally:
            self._runner.release()
            self._close_done.set()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<SyncDispatcher {self._d.framing} {self.local_addr!r}: {state}>"


def _loop_running_here() -> bool:
    """Whether the calling thread is running an event loop (a coroutine called us)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _open(runner: _LoopThread, coro: Coroutine[Any, Any, T]) -> T:
    try:
        return _wait(runner.submit(coro))
    except BaseException:
        runner.release()
        raise


def open_udp(
    adapter: MessageAdapter[M],
    local_addr: tuple[Any, ...] | None = None,
    *,
    framing: Framing = "ack",
    uvloop: bool = False,
    **options: Any,
) -> SyncDispatcher[M]:
    """A blocking dispatcher on a UDP socket; options and defaults as :func:`aiodisp.open_udp`
    (the dual-stack wildcard, 4 MiB socket buffers, a congestion window and a retry
    budget per peer, request() retransmitting over ACK framing)."""
    runner = _LoopThread(uvloop=uvloop)
    d = _open(runner, _open_udp(adapter, local_addr, framing=framing, **options))
    return SyncDispatcher(d, runner)


def open_unix(
    adapter: MessageAdapter[M],
    path: str | os.PathLike[str],
    *,
    framing: Framing = "ack",
    uvloop: bool = False,
    **options: Any,
) -> SyncDispatcher[M]:
    """A blocking dispatcher on a Unix datagram socket; options as :func:`aiodisp.open_unix`."""
    runner = _LoopThread(uvloop=uvloop)
    d = _open(runner, _open_unix(adapter, path, framing=framing, **options))
    return SyncDispatcher(d, runner)


def open_memory_pair(
    adapter: MessageAdapter[M],
    *,
    link: Link | None = None,
    framing: Framing = "ack",
    uvloop: bool = False,
    **options: Any,
) -> tuple[SyncDispatcher[M], SyncDispatcher[M]]:
    """Two blocking dispatchers joined by an in-memory link (one loop thread for both).

    Options as :func:`aiodisp.open_memory_pair` (``link=aiodisp.Link(...)`` for faults);
    the loop thread stops when both are closed.
    """
    runner = _LoopThread(uvloop=uvloop, users=2)
    try:
        a, b = _wait(
            runner.submit(_open_memory_pair(adapter, link=link, framing=framing, **options))
        )
    except BaseException:
        runner.release()
        runner.release()
        raise
    return SyncDispatcher(a, runner), SyncDispatcher(b, runner)
