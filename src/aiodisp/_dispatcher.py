"""The asyncio driver: one transport, one sans-I/O endpoint, one timer.

The whole flow of a datagram: ``transport → datagram_received → endpoint.receive
→ wake the waiter / the reader → send the outbox``. A call: ``register in the
endpoint → send → arm the timer → await a future``. Every protocol decision is
in :mod:`aiodisp._core.endpoint`.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import math
from collections import deque
from collections.abc import Awaitable, Callable, Hashable, Iterable
from types import TracebackType
from typing import Any, Generic, NamedTuple, Self, TypeVar

from ._adapter import MessageAdapter
from ._admission import PeerWindows, Room, Waiters
from ._core.budget import RetryBudget
from ._core.bundling import BUNDLE_LIMIT, RECORD_OVERHEAD, Bundler, pack_length
from ._core.endpoint import Endpoint, Pending, Received
from ._core.framing import Framing
from ._core.pending import REQUEST
from ._ratelog import RateLimitedLog
from ._transports.base import Address, DatagramTransport
from .errors import (
    DispatcherClosed,
    DuplicateKeyError,
    PeerUnreachable,
    ReliabilityUnavailable,
    RequestTimeout,
    TransportError,
)
from .retry import ADAPTIVE, RetryPolicy
from .stats import Counters, Stats

__all__ = ["DEFAULT_TIMEOUT", "Dispatcher"]

M = TypeVar("M")

#: The timeout of a call made with ``timeout=None`` when the dispatcher was given none.
DEFAULT_TIMEOUT = 5.0
_ADDR_CACHE_MAX = 4096
_TIMER_SLACK = 1e-4
_INF = math.inf
#: Name resolution quicker than this is not charged to the call's timeout (see _resolve).
_FREE_RESOLUTION = 1e-3
_LOG = logging.getLogger("aiodisp")
#: The most datagrams held while readers run (see _let_readers_run); past it they
#: are taken at once (and what the queue cannot hold is dropped, not ACKed).
_HOLD_MAX = 256
#: The retry budget of a dispatcher given none: a fifth of first sends plus 10/s.
DEFAULT_RETRY_BUDGET = RetryBudget()


class Dispatcher(Generic[M]):
    """Sends requests and notifications over a datagram transport and sorts what comes back.

    Replies wake the request they answer; every other message is queued for
    :meth:`recv_from` (or ``async for``). See the module docs of :mod:`aiodisp`.

    Options (all keyword-only, all with safe defaults):

    ``framing``: ``"ack"`` (8-byte header: ACKs, retransmission de-duplication,
    reply cache) or ``"raw"`` (the adapter's bytes are the whole datagram).
    ``timeout``: what ``timeout=None`` means in calls (default 5 s).
    ``retry``: the default :class:`RetryPolicy` of request() (default: over ACK
    framing the adaptive policy of notify(), safe since the serving side answers a
    retransmitted copy from its reply cache; over raw framing one send).
    ``notify_retry``: the default policy of notify() over ACK framing (default:
    adaptive, retransmitting until the timeout).
    ``max_queue``: incoming messages held for recv_from (default 1024; past it the
    newest is dropped, counted and not ACKed).
    ``max_pending``: requests and notifies in flight at once (default 65536; past it
    a call waits for room within its own timeout).
    ``check_source``: accept a reply or ACK only from the address the call went to
    (default True; turning it off lets anyone who guesses a key answer).
    ``dedup_ttl`` / ``dedup_capacity``: how long and how many delivered datagrams
    are remembered to drop retransmitted copies (default 30 s, 100,000).
    ``reply_cache_bytes``: the most bytes of replies kept to answer retransmitted
    requests (default 8 MiB; past it the oldest cached replies are let go).
    ``logger``: where drops and errors are logged (default ``logging.getLogger("aiodisp")``),
    at most a few lines per reason every 10 s.
    ``congestion``: a congestion window per peer (default True): how many calls
    may be in flight to it; a call past it waits, first come first served, within
    its own timeout (see docs/tuning.md and :meth:`window`).
    ``retry_budget``: retransmissions to a peer at most ``ratio`` times its first
    sends plus ``min_per_second`` over the last 10 s (default
    ``RetryBudget(ratio=0.2, min_per_second=10.0)``; None: no budget).
    ``coalesce``: the messages and ACKs sent to one peer within one event-loop
    iteration travel together, in datagrams of at most 1200 bytes, sent as the
    iteration ends (default: True over ACK framing; raw framing cannot). Each
    keeps its own packet id, ACK, retransmission and de-duplication; a lone
    message travels as itself. A send that fails then is counted and logged (a
    call's first send fails its call), not raised where the message was sent.
    See docs/framing.md.
    """

    def __init__(
        self,
        transport: DatagramTransport,
        adapter: MessageAdapter[M],
        *,
        framing: Framing = "ack",
        logger: logging.Logger | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        retry: RetryPolicy | None = None,
        notify_retry: RetryPolicy | None = None,
        max_queue: int = 1024,
        max_pending: int = 65536,
        check_source: bool = True,
        dedup_ttl: float = 30.0,
        dedup_capacity: int = 100_000,
        reply_cache_bytes: int = 8 << 20,
        seed: int | None = None,
        congestion: bool = True,
        retry_budget: RetryBudget | None = DEFAULT_RETRY_BUDGET,
        coalesce: bool | None = None,
    ) -> None:
        if retry_budget is not None and not isinstance(retry_budget, RetryBudget):
            raise TypeError(f"retry_budget must be a RetryBudget or None, not {retry_budget!r}")
        missing = [
            f"{name}()"
            for name in ("msg_to_raw", "raw_to_msg", "msg_key")
            if not callable(getattr(adapter, name, None))
        ]
        if missing:
            name = type(adapter).__name__
            raise TypeError(f"{name} is not an adapter: it lacks {', '.join(missing)}")
        self._timeout = _checked_timeout(timeout, "the default timeout")
        self._loop = loop = asyncio.get_running_loop()
        self._transport = transport
        self._log = RateLimitedLog(logger if logger is not None else _LOG)
        core: Endpoint[M] = Endpoint(
            adapter,
            framing=framing,
            max_datagram_size=transport.max_datagram_size,
            max_queue=max_queue,
            check_source=check_source,
            dedup_ttl=dedup_ttl,
            dedup_capacity=dedup_capacity,
            reply_cache_bytes=reply_cache_bytes,
            seed=seed,
            report=self._report_drop,
            congestion=congestion,
            retry_budget=retry_budget,
        )
        self._core = core
        self._retry = retry if retry is not None or not core.ack else ADAPTIVE
        self._notify_retry = notify_retry if notify_retry is not None else ADAPTIVE
        # Admission: room among max_pending calls (the hot path checks the count
        # inline against _max_pending) and readers waiting for a message.
        self._room = Room(loop, max_pending, core.in_flight)
        self._max_pending = max_pending
        self._readers = Waiters(loop)
        # calls waiting for room in their peer's congestion window (the core decides)
        self._windows = PeerWindows(
            loop, core.window_room, core.window_wait_begins, core.window_wait_ends
        )
        self._window_waiting = self._windows.waiting
        # tested for emptiness once per datagram (a deque's truth costs no frame)
        self._room_waiting = self._room.waiting
        self._reading = self._readers.queue
        # readers woken since the transport's read batch last yielded to them
        self._readers_woken = False
        # datagrams held while they run, on a transport without yield_reading()
        self._holding = False
        self._held: deque[tuple[bytes, Address]] = deque()
        self._yield_at = max(1, max_queue // 2)
        self._yield_reading: Callable[[], None] | None = getattr(
            transport, "yield_reading", None
        )
        self._addrs: dict[Any, Address] = {}
        self._resolving: dict[Any, asyncio.Task[Address]] = {}
        # Takes every incoming message as it arrives instead of the queue's readers
        # (a Server with a plain-function handler); see _consume_with().
        self._consumer: Callable[[Received[M]], None] | None = None
        self._consumer_stopped: asyncio.Future[None] | None = None
        # A consumer's direct receiver, in place of datagram_received (what that was
        # before, if not the class's method): see _direct_serving().
        self._direct: Callable[[bytes, Address], None] | None = None
        self._receive_before: Callable[[bytes, Address], None] | None = None
        # the inline server's reader of the socket, while it has one (see _consume_with)
        self._reader: Callable[[], None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._armed_at = math.inf
        self._closed = False
        # A transport may offer a cheaper send for the hot path (see LoopDatagramTransport).
        self._send: Callable[[bytes, Address], object] = getattr(
            transport, "fast_send", transport.send
        )
        # A flow-controlled transport (a bounded send queue per destination) drops
        # what its sender can lose, rather than queue it, and waits per destination.
        self._best_effort: Callable[[bytes, Address], bool] | None = getattr(
            transport, "send_best_effort", None
        )
        # coalesce=True: every datagram goes through the bundler (see _coalescer())
        if coalesce is None:
            coalesce = core.ack
        elif coalesce and not core.ack:
            raise ValueError(
                "coalesce=True needs ACK framing: with raw framing each message is its "
                "own datagram"
            )
        self._bundler: Bundler | None = None
        # destinations whose send queue the last bundle sent found past high water
        self._blocked: set[Address] = set()
        self._send_now = self._send
        if coalesce:
            self._bundler = Bundler(min(BUNDLE_LIMIT, transport.max_datagram_size))
            self._send, self._flush_bundles = self._coalescer(self._bundler)
        self._reply_nowait = self._reply_sender()
        if core.layer is not None:
            # the adapter's message layer may fail calls from the receive path (REJECT)
            self.datagram_received = self._datagram_received_layered  # type: ignore[method-assign]
        transport.start(self)

    # ------------------------------------------------------------------ properties

    @property
    def local_addr(self) -> Address:
        """Where peers reach this dispatcher (pass it to their send calls)."""
        return self._transport.local_addr

    @property
    def transport(self) -> DatagramTransport:
        return self._transport

    @property
    def framing(self) -> Framing:
        return self._core.framing

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def stats(self) -> Stats:
        """A snapshot of the counters (see :class:`aiodisp.Stats`)."""
        return self._core.stats()

    @property
    def pending(self) -> int:
        """Requests and notifies now waiting for a reply or an ACK."""
        return self._core.pending_count

    @property
    def queued(self) -> int:
        """Messages waiting in the incoming queue."""
        return len(self._core.inbox)

    def window(self, addr: Address) -> int | None:
        """The calls that may be in flight to ``addr`` now: its congestion window
        (None with ``congestion=False``)."""
        try:
            dest = self._addrs.get(addr, addr)
        except TypeError:
            dest = addr
        return self._core.window(dest)

    def rto(self, addr: Address) -> float:
        """The adaptive retransmission timeout now estimated for ``addr``."""
        try:
            dest = self._addrs.get(addr, addr)
        except TypeError:
            dest = addr
        return self._core.rto(dest)

    # ------------------------------------------------------------------ calls

    async def request(
        self,
        msg: M,
        addr: Address,
        *,
        timeout: float | None = None,
        retry: RetryPolicy | None = None,
        accept: Callable[[M], bool] | None = None,
    ) -> M:
        """Send ``msg`` to ``addr`` and return the reply with the same key.

        ``timeout`` (default: the dispatcher's) bounds the whole call, name
        resolution included; ``retry`` (default: the dispatcher's ``retry``,
        else one send) says when to send the same datagram again. ``accept``:
        a reply with the key from ``addr`` for which ``accept(reply)`` is false
        (or raises) is dropped (``stats.unaccepted``) and the call keeps
        waiting (a DNS answer to another question, say). With an adapter's
        message layer (``classify``), a REJECT of the request raises
        :class:`PeerRejected` at once, and an ACK stops its retransmission
        (it then waits for its reply until the timeout). Raises
        :class:`RequestTimeout` when the timeout passes or the policy is spent,
        :class:`DuplicateKeyError` if the key is already pending,
        :class:`AdapterError`, :class:`MessageTooLarge`, :class:`TransportError`
        or :class:`DispatcherClosed`; ``ValueError`` / ``TypeError`` for a
        timeout that is not None or a positive finite number.
        """
        # _notify_call() for a request, written out: the hot path of the library,
        # one coroutine frame per request instead of a call and a coroutine.
        # tests/driver/test_call_copies.py drives both through the same cases.
        # That frame lives as long as the call, and its size is fixed by its locals
        # and its stack depth: few of either (issue 14: 344 -> 320 B per pending
        # request without `now`, `core` and `fut`, benchmarks/memory.py); the calls
        # that must wait first start in _start_later().
        if self._closed:
            raise DispatcherClosed()
        if timeout is None:
            timeout = self._timeout
        else:
            try:
                if not 0.0 < timeout < _INF:
                    raise _bad_timeout(timeout)
            except TypeError:
                raise _bad_timeout(timeout) from None
        try:
            dest = self._addrs.get(addr)
        except TypeError:
            dest = None
        if (
            dest is None
            or len(self._core.waiting) + len(self._core.acking) >= self._max_pending
            or (self._core.throttled and dest in self._core.throttled)
        ):
            p = await self._start_later(msg, addr, dest, timeout, retry, accept, True)
            dest = p.addr
        else:
            try:
                p = self._core.start_request(
                    msg, dest, self._loop.create_future(), self._loop.time(), timeout,
                    retry if retry is not None else self._retry, accept,
                )
            except BaseException:
                self._not_started(dest)
                raise
        del msg
        try:
            try:
                blocked = self._send(p.frame, dest)  # type: ignore[arg-type]
            except Exception as exc:
                self._first_send_failed(p, dest, exc)
                blocked = False
            if blocked:
                await self._wait_writable(p, dest)
            if p.due < self._armed_at:
                self._arm(p.due)
            return await p.waiter  # type: ignore[no-any-return]
        finally:
            if not p.done:
                self._abandoned(p)

    async def _start_later(
        self,
        msg: M,
        addr: Address,
        dest: Address | None,
        timeout: float,
        policy: RetryPolicy | None,
        accept: Callable[[M], bool] | None,
        request: bool,
    ) -> Pending:
        """Register a call (a request if ``request``, else a notify) that waits
        first: for its address (``dest`` None: ``addr`` is not resolved yet), for
        room among max_pending, for its peer's window. ``timeout``: the call's,
        checked; ``policy``: a request's ``retry`` argument, a notify's policy."""
        if dest is None:
            dest, timeout = await self._resolve(addr, timeout)
        now = self._loop.time()
        core = self._core
        if len(core.waiting) + len(core.acking) >= self._max_pending:
            now, timeout = await self._wait_for_room(now, timeout, msg, dest)
        if core.throttled and dest in core.throttled:
            now, timeout = await self._wait_for_window(now, timeout, msg, dest, request)
        fut = self._loop.create_future()
        try:
            if request:
                p = core.start_request(
                    msg, dest, fut, now, timeout,
                    policy if policy is not None else self._retry, accept,
                )
            else:
                assert policy is not None
                p = core.start_notify(msg, dest, fut, now, timeout, policy)
        except BaseException:
            self._not_started(dest)
            raise
        return p

    def _abandoned(self, p: Pending) -> None:
        """A call's caller left before its end (cancelled, or its send failed): end
        it in the core and pass on its room and its place in its peer's window."""
        self._core.cancel(p)
        self._freed((p.addr,))

    async def notify(
        self,
        msg: M,
        addr: Address,
        *,
        timeout: float | None = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        """Send ``msg`` reliably: return once the peer has it.

        With ACK framing (the default) that is once the peer's dispatcher ACKs
        it, which it does when the message is queued for its application;
        ``retry`` (default: the dispatcher's ``notify_retry``, adaptive) says
        when to send it again. With raw framing and an adapter with
        ``classify`` and ``transaction_key`` (a protocol's own message layer,
        CoAP's CON), it is once the peer's ACK with the message's transaction
        key arrives (retransmitted until then; its REJECT raises
        :class:`PeerRejected`). Otherwise, with raw framing on a reliable
        transport (Unix datagram, a lossless memory link) it is once the
        datagram is handed to the kernel; a peer whose queue is full may still
        drop it. Raises :class:`ReliabilityUnavailable` on an unreliable
        transport with raw framing and :class:`RequestTimeout` when no ACK
        comes in time.
        """
        if self._closed:
            raise DispatcherClosed()
        core = self._core
        if core.ack or (core.layer is not None and core.layer.reliable):
            await self._notify_call(
                msg, addr, timeout, retry if retry is not None else self._notify_retry
            )
        elif self._transport.reliable:
            await self._send_oneway(msg, addr, timeout)
        else:
            raise ReliabilityUnavailable(
                "notify() needs ACK framing on an unreliable transport; this dispatcher "
                "uses raw framing (use notify_unreliable(), or framing='ack')"
            )

    def send_nowait(self, msg: M, addr: Address) -> None:
        """Send ``msg`` once, now, from plain (not async) code; nothing is confirmed.

        Raises what :meth:`notify_unreliable` raises, and :class:`TransportError`
        when the transport cannot take the datagram now (its send queue for
        ``addr`` is full): nothing waits. ``addr`` is a numeric address, the
        ``addr`` of a :class:`Received`, or a
        name an earlier call resolved: a name that would need a look-up now is a
        :class:`TransportError`, as is a malformed address.
        """
        try:
            dest = self._addrs.get(addr)
        except TypeError:
            raise TransportError(f"{addr!r} is not an address: it is unhashable") from None
        if dest is None:
            dest = self._resolve_now(addr)
        self._reply_nowait(msg, dest)

    def _resolve_now(self, addr: Any) -> Address:
        """``addr`` resolved without waiting (numeric addresses resolve at once), cached."""
        coro = self._transport.resolve(addr)
        try:
            coro.send(None)
        except StopIteration as done:
            dest = done.value
        except TypeError as exc:
            raise TransportError(f"{addr!r} is not an address: {exc}") from exc
        else:
            coro.close()
            raise TransportError(
                f"cannot resolve {addr!r} without waiting: send_nowait() takes a numeric "
                "address, or a name an awaited call has resolved"
            )
        addrs = self._addrs
        if len(addrs) >= _ADDR_CACHE_MAX:
            addrs.clear()
        addrs[addr] = dest
        return dest

    def _reply_sender(self) -> Callable[[M, Address], None]:
        """The serving seam's way out: ``_reply_nowait(msg, addr)``, built once.

        :meth:`send_nowait` to an address as the transport reported it (no
        look-up): an inline handler's reply to the sender of a :class:`Received`
        goes through it, with the closed check, the transport's "blocked" answer
        and the error wrapping. A closure over the core's framing and the
        transport's send (server: 28.5k -> 28.3k instructions per request against
        a method that looks them up per reply).
        """
        frame_oneway = self._core.frame_oneway
        # a reply can be lost (the peer retries): past a full queue it is dropped
        best_effort = self._best_effort
        send = self._send if best_effort is None else best_effort
        # what ``send`` answers for a full queue: "blocked" (True), or "dropped" (False)
        full: bool | None = best_effort is None
        if self._bundler is not None:
            send, full = self._send, None  # (bundled: held, never refused, never raises)

        def reply_nowait(msg: M, addr: Address) -> None:
            if self._closed:
                raise DispatcherClosed()
            frame = frame_oneway(msg, addr)
            try:
                answer = send(frame, addr)
            except Exception as exc:
                raise TransportError.cannot_send(addr, exc) from exc.__cause__ or exc
            if answer is full:
                raise TransportError(
                    f"cannot send to {addr!r} now: the transport's send queue is full"
                )

        return reply_nowait

    async def _notify_call(
        self, msg: M, addr: Address, timeout: float | None, policy: RetryPolicy
    ) -> None:
        """Register a notify in the core, send it, and wait for its ACK (as request() does)."""
        if self._closed:
            raise DispatcherClosed()
        if timeout is None:
            timeout = self._timeout
        else:
            try:
                if not 0.0 < timeout < _INF:
                    raise _bad_timeout(timeout)
            except TypeError:
                raise _bad_timeout(timeout) from None
        try:
            dest = self._addrs.get(addr)
        except TypeError:
            dest = None
        if (
            dest is None
            or len(self._core.waiting) + len(self._core.acking) >= self._max_pending
            or (self._core.throttled and dest in self._core.throttled)
        ):
            p = await self._start_later(msg, addr, dest, timeout, policy, None, False)
            dest = p.addr
        else:
            try:
                p = self._core.start_notify(
                    msg, dest, self._loop.create_future(), self._loop.time(), timeout, policy
                )
            except BaseException:
                self._not_started(dest)
                raise
        del msg  # (as request() does: the wait does not need it)
        try:
            try:
                blocked = self._send(p.frame, dest)  # type: ignore[arg-type]
            except Exception as exc:
                self._first_send_failed(p, dest, exc)
                blocked = False
            if blocked:
                await self._wait_writable(p, dest)
            if p.due < self._armed_at:
                self._arm(p.due)
            await p.waiter
        finally:
            if not p.done:
                self._abandoned(p)

    def _not_started(self, dest: Address = None) -> None:
        """A call failed before it was registered: pass on the room it will not use
        (and its place in ``dest``'s window, had it waited for one)."""
        self._freed((dest,))

    def _freed(self, dests: Iterable[Address]) -> None:
        """Calls ended, or never started: pass on their room among max_pending and
        their places in the windows of ``dests`` (one per call; read only if calls
        wait for a window)."""
        if self._room_waiting:
            self._room.freed()
        if self._window_waiting:
            for dest in dests:
                self._windows.freed(dest)

    def _first_send_failed(self, p: Pending, dest: Address, exc: Exception) -> None:
        """Raise the error of a failed first send, or count it as a loss the policy repairs.

        ``exc`` is a TransportError, or the error of a bare carrier. A call that
        raises here was never sent: it is counted neither as sent nor as cancelled.
        """
        if p.policy is None or not _transient(exc):
            self._core.unsent(p)
            if self._window_waiting:
                self._windows.freed(dest)
            raise TransportError.cannot_send(dest, exc) from exc.__cause__ or exc
        self._send_failed(dest, exc)  # a loss like any other: the policy resends

    async def notify_unreliable(
        self, msg: M, addr: Address, timeout: float | None = None
    ) -> None:
        """Send ``msg`` once and return at once; nothing is retransmitted or confirmed.

        It waits only if the transport's send queue is full (a Unix peer that
        does not read), for room, within ``timeout`` (default: the dispatcher's).
        """
        if self._closed:
            raise DispatcherClosed()
        timeout = self._timeout if timeout is None else _checked_timeout(timeout)
        try:
            dest = self._addrs.get(addr)
        except TypeError:
            dest = None
        if dest is None:
            dest, timeout = await self._resolve(addr, timeout)
        frame = self._core.frame_oneway(msg, dest)
        try:
            blocked = self._send(frame, dest)
        except Exception as exc:
            raise TransportError.cannot_send(dest, exc) from exc.__cause__ or exc
        if blocked:
            deadline = self._loop.time() + timeout
            try:
                async with asyncio.timeout_at(deadline):
                    await self._writable(dest)
            except TimeoutError:
                raise RequestTimeout(
                    waited_for="send room", addr=dest, attempts=1, elapsed=timeout
                ) from None
            if self._closed:
                raise DispatcherClosed()

    def _writable(self, dest: Address) -> Awaitable[None]:
        """Room in the send queue: ``dest``'s own, on a flow-controlled transport."""
        transport: Any = self._transport
        waiting: Awaitable[None] = (
            transport.wait_writable(dest) if self._best_effort else transport.wait_writable()
        )
        return waiting

    # notify() over a reliable transport with raw framing sends the same way
    _send_oneway = notify_unreliable

    async def _wait_writable(self, p: Pending, dest: Address) -> None:
        """Wait for room in the transport's send queue, within the call's deadline."""
        try:
            async with asyncio.timeout_at(p.deadline):
                await self._writable(dest)
        except TimeoutError:
            raise RequestTimeout(
                waited_for="send room",
                key=p.key,
                addr=dest,
                attempts=p.attempts,
                elapsed=self._loop.time() - p.sent_at,
            ) from None
        if self._closed:
            raise DispatcherClosed()

    async def recv_from(self, timeout: float | None = None) -> Received[M]:
        """The next message that is not a reply: ``Received(msg, size, addr)``.

        Raises :class:`RequestTimeout` when ``timeout`` (default: the
        dispatcher's) passes, :class:`DispatcherClosed` once closed.
        """
        inbox = self._core.inbox
        wait = self._timeout if timeout is None else _checked_timeout(timeout)
        if inbox and not self._closed:
            return inbox.popleft()
        try:
            async with asyncio.timeout(wait):
                return await self._get()
        except TimeoutError:
            if self._closed:
                raise DispatcherClosed() from None
            raise RequestTimeout(waited_for="message", elapsed=wait) from None

    async def _get(self) -> Received[M]:
        inbox = self._core.inbox
        while True:
            if self._closed:
                raise DispatcherClosed()
            if inbox:
                return inbox.popleft()
            await self._readers.wait()

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Received[M]:
        inbox = self._core.inbox
        if inbox and not self._closed:  # the common case under load: no wait, no extra frame
            return inbox.popleft()
        try:
            return await self._get()
        except DispatcherClosed:
            raise StopAsyncIteration from None

    async def serve(
        self,
        handler: Callable[[M, Address], Awaitable[M | None] | M | None],
        *,
        concurrency: int = 64,
    ) -> None:
        """Answer every incoming message with ``await handler(msg, addr)`` until closed.

        A handler returns the reply to send (or None for no reply). Up to
        ``concurrency`` handlers run at once; a handler that raises is counted
        and logged, never fatal. Returns when the dispatcher closes.
        """
        from ._serve import serve

        await serve(self, handler, concurrency=concurrency)

    # ------------------------------------------------------------------ closing

    async def close(self) -> None:
        """Stop receiving, close the transport and fail every waiting call.

        Idempotent. Calls waiting now and made later raise :class:`DispatcherClosed`;
        messages still queued are discarded and counted (``discarded_on_close``).
        """
        if self._closed:
            return
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._armed_at = _INF
        if self._bundler is not None:
            self._flush_bundles()  # what was sent before close() leaves before it closes
        self._transport.close()
        self._log.flush()
        self._stop_consuming(self._consumer)
        for task in list(self._resolving.values()):
            task.cancel()
        for p in self._core.close():
            waiter = p.waiter
            p.waiter = None
            if waiter is not None and not waiter.done():
                waiter.set_exception(DispatcherClosed("the dispatcher closed while waiting"))
                waiter.exception()  # a call blocked on send room raises its own: no warning
        self._readers.wake_all()  # each woken call sees _closed and raises
        self._room.release_all()
        self._windows.release_all()
        await asyncio.sleep(0)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # ------------------------------------------------------------------ transport side

    def datagram_received(self, data: bytes, addr: Address) -> None:
        if self._holding and len(self._held) < _HOLD_MAX:  # (see _let_readers_run)
            self._held.append((data, addr))
            return
        core = self._core
        p = core.receive(data, addr, self._loop.time())
        if p is not None:
            waiter = p.waiter
            p.waiter = None
            if not waiter.done():
                waiter.set_result(p.result)
            if self._room_waiting:
                self._room.freed()
            if self._window_waiting:
                self._windows.freed(p.addr)
            if core.outbox:
                self._flush()
            return  # a completed call queues nothing for the application
        if core.outbox:
            self._flush()
        if core.completed:
            self._wake_completed()
        inbox = core.inbox
        if inbox:
            consumer = self._consumer
            if consumer is not None:  # (never set once closed)
                consumer(inbox.popleft())
                if inbox:  # only if the consumer changed meanwhile, or let some wait
                    self._consume()
            else:
                if self._reading:
                    self._readers.wake(len(inbox))
                    self._readers_woken = True
                if len(inbox) >= self._yield_at and self._readers_woken:
                    self._let_readers_run()

    def _let_readers_run(self) -> None:
        """The queue is half full and readers are about to run: end the transport's
        read batch so they do before more is read (a batch of bundles can carry
        more messages than the queue holds). What waits stays in the kernel, or,
        where the transport cannot stop its batch, in :attr:`_held`."""
        self._readers_woken = False
        if self._yield_reading is not None:
            self._yield_reading()
        elif not self._holding and not self._closed:
            # A transport that cannot stop its batch (uvloop's): what else it reads
            # now is held, in order, and taken once the readers have run.
            self._holding = True
            self._loop.call_soon(self._take_held)

    def _take_held(self) -> None:
        """Take the datagrams held while readers ran, in order (until the queue is
        half full again, when the rest waits for the readers once more)."""
        self._holding = False
        held = self._held
        receive = self.datagram_received
        while held and not self._holding:
            if self._closed:
                held.clear()
                return
            data, addr = held.popleft()
            receive(data, addr)

    def _wake_completed(self) -> None:
        """Wake the calls a bundle's datagrams completed (see Endpoint.completed)."""
        completed = self._core.completed
        for p in completed:
            waiter = p.waiter
            p.waiter = None
            if waiter is not None and not waiter.done():
                waiter.set_result(p.result)
        self._freed(p.addr for p in completed)
        completed.clear()

    def _datagram_received_layered(self, data: bytes, addr: Address) -> None:
        """:meth:`datagram_received` with an adapter's message layer: the calls a
        REJECT failed (the core lists them) fail with their PeerRejected."""
        Dispatcher.datagram_received(self, data, addr)
        failed = self._core.layer.failed  # type: ignore[union-attr]
        if failed:
            for p in failed:
                waiter = p.waiter
                p.waiter = None
                if waiter is not None and not waiter.done():
                    waiter.set_exception(p.result)
            self._freed([p.addr for p in failed])
            failed.clear()

    def error_received(self, exc: Exception) -> None:
        self._core.counters.transport_errors += 1
        self._log(logging.WARNING, "transport", "transport error: %s", exc)
        if isinstance(exc, PeerUnreachable) and not self._closed:
            self._unreachable(exc)

    def _unreachable(self, report: PeerUnreachable) -> None:
        """Nothing listens at ``report.addr``: fail every call in flight to it now."""
        addr = report.addr
        calls = self._core.unreachable(addr)
        for p in calls:
            waiter = p.waiter
            p.waiter = None
            if waiter is not None and not waiter.done():
                waiter.set_exception(report.for_call(p.key, p.attempts))
        if calls:
            self._freed((addr,))

    # ------------------------------------------------------------------ the serving seam

    def _consume_with(
        self,
        consumer: Callable[[Received[M]], None],
        direct: Callable[[bytes, Address], None] | None = None,
        reader: Callable[[], None] | None = None,
    ) -> asyncio.Future[None]:
        """Hand every incoming message to ``consumer`` as it arrives, not to the queue.

        The seam an inline server (:mod:`aiodisp._serve`) uses, with
        :meth:`_reply_nowait` for its replies. Messages already queued are handed
        over at once. Returns a future that completes when
        :meth:`_stop_consuming` is called with the same consumer, or the
        dispatcher closes. Meanwhile readers of recv_from() and ``async for``
        get nothing. The consumer runs only while the dispatcher is open.

        ``direct``, built from :meth:`_direct_serving`, takes every datagram from
        the transport in place of :meth:`datagram_received` until then (it hands
        what it does not answer itself to the ``receive`` it was given). ``reader``
        (with ``direct``, on a transport with ``read_with``: SocketTransport) reads
        the socket itself in place of the transport's read loop until then.
        """
        if self._consumer is not None:
            raise RuntimeError("this dispatcher already hands its messages to a consumer")
        stopped: asyncio.Future[None] = self._loop.create_future()
        if self._closed:
            stopped.set_result(None)
            return stopped
        self._consumer = consumer
        self._consumer_stopped = stopped
        if direct is not None:
            self._receive_before = self.__dict__.get("datagram_received")
            self._direct = self.datagram_received = direct  # type: ignore[method-assign,assignment]
            self._sink_changed()
            if reader is not None:
                self._reader = reader
                self._transport.read_with(reader)  # type: ignore[attr-defined]
        if self._core.inbox:
            self._consume()
        return stopped

    def _direct_serving(self) -> DirectServing[M] | None:
        """What an inline server needs to answer datagrams straight from the transport.

        None unless that is safe: raw framing with no message layer (ACK framing
        keeps the core's path, for its delivery log and reply cache), an open
        dispatcher and no consumer yet. (It needs no closed check: close()
        removes it before anything else can run.) A :class:`DirectServing` names the few
        things such a receiver reads (the core's ``waiting``, ``inbox`` and
        ``counters``, the adapter's methods, the reply's send) and ``receive``,
        where it hands every datagram that is not a plain message for it (see
        :mod:`aiodisp._serve`, which pins its copy of the core's checks).
        """
        core = self._core
        if core.ack or core.layer is not None or self._closed or self._consumer is not None:
            return None
        adapter = core.adapter
        best_effort = self._best_effort
        return DirectServing(
            receive=self.datagram_received,
            raw_to_msg=adapter.raw_to_msg,
            msg_key=adapter.msg_key,
            is_reply=getattr(adapter, "is_reply", None),
            msg_to_raw=adapter.msg_to_raw,
            waiting=core.waiting,
            inbox=core.inbox,
            counters=core.counters,
            max_datagram_size=core.max_datagram_size,
            send=self._send if best_effort is None else best_effort,
            full=best_effort is None,
        )

    def _sink_changed(self) -> None:
        # a transport that keeps the sink's datagram_received reads it again
        changed = getattr(self._transport, "sink_changed", None)
        if changed is not None:
            changed()

    def _stop_consuming(self, consumer: Callable[[Received[M]], None] | None) -> None:
        """Undo :meth:`_consume_with` for ``consumer`` (if it is still the one)."""
        if consumer is None or consumer is not self._consumer:
            return
        self._consumer = None
        if self._reader is not None:
            self._reader = None
            self._transport.read_with(None)  # type: ignore[attr-defined]
        if self._direct is not None:
            self._direct = None
            if self._receive_before is None:
                del self.datagram_received  # the class's method again
            else:
                self.datagram_received = self._receive_before  # type: ignore[method-assign,assignment]
                self._receive_before = None
            self._sink_changed()
        stopped, self._consumer_stopped = self._consumer_stopped, None
        if stopped is not None and not stopped.done():
            stopped.set_result(None)
        if self._core.inbox and self._reading:
            self._readers.wake(len(self._core.inbox))

    def _consume(self) -> None:
        inbox = self._core.inbox
        while inbox:
            consumer = self._consumer
            if consumer is None or self._closed:
                return
            consumer(inbox.popleft())

    # ------------------------------------------------------------------ internals

    def _flush(self) -> None:
        """Send the core's outbox: every datagram is tried, whatever the others do.

        ACKs and cached replies can be lost (their peers retransmit): past a full
        send queue they are dropped and counted as transport errors.
        """
        outbox = self._core.outbox
        if self._bundler is not None:
            send_later = self._send
            for data, addr in outbox:
                send_later(data, addr)
            outbox.clear()
            return
        best_effort = self._best_effort
        send = self._send if best_effort is None else best_effort
        try:
            for data, addr in outbox:
                try:
                    if send(data, addr) is False and best_effort is not None:
                        self._send_failed(addr, _QUEUE_FULL)
                except Exception as exc:  # a failed ACK or cached reply: counted, not fatal
                    self._send_failed(addr, exc)
        finally:
            outbox.clear()

    def _coalescer(
        self, bundler: Bundler
    ) -> tuple[Callable[[bytes, Address], bool], Callable[[], None]]:
        """``(send_later, flush)``: the sends of ``coalesce=True``.

        ``send_later(frame, addr)`` takes the place of the transport's send for
        every datagram: the bundler holds it, and the first one held since the
        last flush schedules ``flush`` with ``call_soon``, so what this
        iteration sends travels at the start of the next one (after callbacks
        already scheduled, with no timer). A bundle that fills up goes at once.
        It answers True ("blocked": the caller waits for room, as it would for
        the transport's send) when the last datagram sent to ``addr`` found its
        send queue past its high-water mark; the transport queued that one.
        """
        add = bundler.add
        held = bundler.open.get  # (drain() clears the same dict)
        limit = bundler.limit
        pack_len = pack_length
        call_soon = self._loop.call_soon
        scheduled = False
        blocked = self._blocked

        def send_later(frame: bytes, addr: Address) -> bool:
            nonlocal scheduled
            # Bundler.add() inlined for a frame that joins an open bundle, the common
            # case: a destination has an open bundle only while a flush is scheduled.
            # With the parts joined once per bundle, send_nowait on uvloop went from
            # 2.48 to 1.36-1.41 us per message (256 a loop iteration, best of 30).
            # tests/driver/test_coalesce_copies.py pins the copy to add().
            n = len(frame)
            entry = held(addr)
            if entry is not None:
                total = entry[0] + n + RECORD_OVERHEAD
                if total <= limit and len(entry[1]) < bundler.max_parts:
                    entry[0] = total
                    parts = entry[1]
                    parts.append(pack_len(n))
                    parts.append(frame)
                    return addr in blocked if blocked else False
            if add(frame, addr):
                for datagram, dest, frames in bundler.take_ready():
                    self._send_bundle(datagram, dest, frames)
            if not scheduled:
                scheduled = True
                call_soon(flush)
            return addr in blocked if blocked else False

        def flush() -> None:
            nonlocal scheduled
            scheduled = False
            blocked.clear()  # (each send below says again whether its queue is past high water)
            if bundler.open or bundler.ready:
                for datagram, dest, frames in bundler.drain():
                    self._send_bundle(datagram, dest, frames)

        return send_later, flush

    def _send_bundle(self, datagram: bytes, addr: Address, frames: list[bytes]) -> None:
        """Send one datagram of the bundler; a failure is counted, and fails the calls
        whose first send it carried unless it is a loss their policies repair."""
        try:
            if self._send_now(datagram, addr):
                self._blocked.add(addr)
        except Exception as exc:
            self._send_failed(addr, exc)
            if not _transient(exc):
                self._fail_unsent(addr, frames, exc)
            return
        if len(frames) > 1:
            self._core.counters.bundles_sent += 1

    def _fail_unsent(self, addr: Address, frames: list[bytes], exc: Exception) -> None:
        """Fail the calls to ``addr`` whose first datagram is one of ``frames`` (it
        could not be sent): as request() raises for a first send that fails."""
        core = self._core
        sent = {id(frame) for frame in frames}
        calls = [
            p
            for p in (*core.waiting.values(), *core.acking.values())
            if p.attempts == 1 and p.addr == addr and id(p.frame) in sent
        ]
        for p in calls:
            core.unsent(p)
            waiter = p.waiter
            p.waiter = None
            if waiter is not None and not waiter.done():
                waiter.set_exception(TransportError.cannot_send(addr, exc))
        if calls:
            self._freed((addr,))

    def _send_failed(self, addr: Address, exc: Exception) -> None:
        self._core.counters.transport_errors += 1
        self._log(logging.WARNING, "send", "could not send to %r: %s", addr, exc)

    def _arm(self, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._armed_at = when
        self._timer = self._loop.call_at(when, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._armed_at = _INF
        core = self._core
        now = self._loop.time()
        try:
            expired = core.handle_timer(now + _TIMER_SLACK)
            if core.outbox:
                self._flush()
            for p in expired:
                waiter = p.waiter
                p.waiter = None
                if waiter is not None and not waiter.done():
                    waiter.set_exception(_timeout_error(p, now))
                    waiter.exception()  # (retrieved: see close())
            if expired:
                self._freed(p.addr for p in expired)
        finally:
            when = core.next_deadline()
            if when is not None and not self._closed:
                self._arm(when)

    async def _wait_for_window(
        self, now: float, timeout: float, msg: M, dest: Address, request: bool = False
    ) -> tuple[float, float]:
        """Wait for room in ``dest``'s congestion window; return (now, time left).

        A request whose key is pending already fails at once (DuplicateKeyError),
        not after its wait (the core checks again when it starts).
        """
        if request:
            try:
                key = self._core.key_of(msg)
                pending = key in self._core.waiting
            except Exception:  # (the start raises the adapter's error)
                pending = False
            if pending:
                raise DuplicateKeyError(key)
        deadline = now + timeout
        try:
            await self._windows.wait(dest, deadline)
        except TimeoutError:
            raise RequestTimeout(
                waited_for="window",
                key=_key_or_none(self._core, msg),
                addr=dest,
                elapsed=timeout,
            ) from None
        if self._closed:
            raise DispatcherClosed()
        now = self._loop.time()
        if now >= deadline:  # woken as its time ran out: the turn goes on, nothing is sent
            self._windows.freed(dest)
            raise RequestTimeout(
                waited_for="window", key=_key_or_none(self._core, msg), addr=dest,
                elapsed=timeout,
            )
        return now, deadline - now

    async def _wait_for_room(
        self, now: float, timeout: float, msg: M, dest: Address
    ) -> tuple[float, float]:
        """Wait until fewer than max_pending calls are in flight; return (now, time left)."""
        deadline = now + timeout
        try:
            await self._room.wait(deadline, lambda: self._closed)
        except TimeoutError:
            raise RequestTimeout(
                waited_for="room",
                key=_key_or_none(self._core, msg),
                addr=dest,
                elapsed=timeout,
                limit=self._max_pending,
            ) from None
        if self._closed:
            raise DispatcherClosed()
        now = self._loop.time()
        return now, max(deadline - now, 0.0)

    async def _resolve(self, addr: Any, timeout: float) -> tuple[Address, float]:
        """``addr`` in the transport's form, and the time left of ``timeout`` after it.

        Resolution counts inside the call's timeout, and close() interrupts it.
        Calls that resolve the same address at once share one resolution, so they
        all send to one address object (uvloop's address cache then matches it by
        identity).
        """
        loop = self._loop
        start = loop.time()
        resolving = self._resolving
        try:
            task = resolving.get(addr)
        except TypeError:
            raise TransportError(f"{addr!r} is not an address: it is unhashable") from None
        if task is None:
            task = resolving[addr] = loop.create_task(self._transport.resolve(addr))
            task.add_done_callback(lambda done: _forget(resolving, addr, done))
        try:
            async with asyncio.timeout(timeout):
                dest = await asyncio.shield(task)  # one caller leaving stops no other
        except TimeoutError:
            raise RequestTimeout(waited_for="address", addr=addr, elapsed=timeout) from None
        except asyncio.CancelledError:
            if self._closed and task.cancelled():
                raise DispatcherClosed() from None
            raise
        except TypeError as exc:
            raise TransportError(f"{addr!r} is not an address: {exc}") from exc
        if self._closed:
            raise DispatcherClosed()
        addrs = self._addrs
        if len(addrs) >= _ADDR_CACHE_MAX:
            addrs.clear()
        addrs[addr] = dest
        took = loop.time() - start
        # A resolution quicker than a millisecond (a numeric address) is not charged:
        # calls made with equal timeouts keep equal timeouts, which the core's
        # schedule files in one FIFO lane (a heap push per call otherwise).
        return dest, (timeout if took < _FREE_RESOLUTION else max(timeout - took, 0.0))

    def _report_drop(self, reason: str, addr: Address, detail: object) -> None:
        self._log(logging.WARNING, reason, "dropped a datagram from %r: %s (%s)", addr, reason,
                  detail)

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"{self.pending} pending, {self.queued} queued"
        return f"<Dispatcher {self.framing} {self.local_addr!r}: {state}>"


#: Send errors that say "not now" rather than "never": retransmission may get through.
_TRANSIENT_ERRNOS = frozenset(
    {errno.EPERM, errno.ENOBUFS, errno.EAGAIN, errno.ENETUNREACH, errno.EHOSTUNREACH}
)


#: What a dropped ACK or cached reply is counted and logged as.
_QUEUE_FULL = TransportError("its send queue is full: an ACK or cached reply was dropped")


class DirectServing(NamedTuple, Generic[M]):
    """What :meth:`Dispatcher._direct_serving` hands an inline server (see there)."""

    #: where every datagram that is not a plain message for the server goes
    receive: Callable[[bytes, Address], None]
    raw_to_msg: Callable[[bytes], M]
    msg_key: Callable[[M], Hashable]
    is_reply: Callable[[M], bool] | None
    msg_to_raw: Callable[[M], bytes]
    #: the core's pending requests by key, its inbox and counters (read, and
    #: ``delivered`` / ``notifies`` bumped, as the core does)
    waiting: dict[Hashable, Pending]
    inbox: deque[Received[M]]
    counters: Counters
    max_datagram_size: int
    #: the transport's send for a reply (best effort where it has one)
    send: Callable[[bytes, Address], object]
    #: what ``send`` answers when its queue is full (the reply is not sent)
    full: bool


def _transient(exc: Exception) -> bool:
    cause = exc.__cause__ if isinstance(exc, TransportError) else exc
    return isinstance(cause, OSError) and cause.errno in _TRANSIENT_ERRNOS


def _checked_timeout(timeout: object, what: str = "timeout") -> float:
    """``timeout`` if it is a positive finite number of seconds; else the error to raise."""
    try:
        if 0.0 < timeout < _INF:  # type: ignore[operator]
            return timeout  # type: ignore[return-value]
    except TypeError:
        pass
    raise _bad_timeout(timeout, what)


def _bad_timeout(timeout: object, what: str = "timeout") -> Exception:
    if isinstance(timeout, bool) or not isinstance(timeout, int | float):
        return TypeError(f"{what} must be None or a number of seconds, not {timeout!r}")
    return ValueError(f"{what} must be None or a positive finite number of seconds, "
                      f"not {timeout!r}")


def _forget(resolving: dict[Any, asyncio.Task[Address]], addr: Any, task: asyncio.Task[Any]
            ) -> None:
    if resolving.get(addr) is task:
        del resolving[addr]
    if not task.cancelled():
        task.exception()  # retrieved: every caller may have left already


def _key_or_none(core: Endpoint[Any], msg: Any) -> Any:
    try:
        return core.key_of(msg)
    except Exception:
        return None


def _timeout_error(p: Pending, now: float) -> RequestTimeout:
    return RequestTimeout(
        waited_for="reply" if p.kind == REQUEST else "ack",
        key=p.key,
        addr=p.addr,
        attempts=p.attempts,
        elapsed=now - p.sent_at,
    )
