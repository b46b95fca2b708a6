"""The asyncio driver: one transport, one sans-I/O endpoint, one timer.

The whole flow of a datagram: ``transport → datagram_received → endpoint.receive
→ wake the waiter / the reader → send the outbox``. A call: ``register in the
endpoint → send → arm the timer → await a future``. Every protocol decision is
in :mod:`aiodisp._core.endpoint`.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import math
import random
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Hashable
from types import TracebackType
from typing import Any, Generic, Self, TypeVar

from ._adapter import MessageAdapter
from ._core.delivery_log import DeliveryLog
from ._core.endpoint import REQUEST, Endpoint, Pending, Received
from ._core.framing import Framing
from ._core.rtt import RttTable
from ._ratelog import RateLimitedLog
from ._transports.base import Address, DatagramTransport
from .errors import (
    DispatcherClosed,
    ReliabilityUnavailable,
    RequestTimeout,
    TransportError,
)
from .retry import ADAPTIVE, RetryPolicy
from .stats import Stats

M = TypeVar("M")

#: The timeout of a call made with ``timeout=None`` when the dispatcher was given none.
DEFAULT_TIMEOUT = 5.0
_ADDR_CACHE_MAX = 4096
_TIMER_SLACK = 1e-4
_LOG = logging.getLogger("aiodisp")


class Dispatcher(Generic[M]):
    """Sends requests and notifications over a datagram transport and sorts what comes back.

    Replies wake the request they answer; every other message is queued for
    :meth:`recv_from` (or ``async for``). See the module docs of :mod:`aiodisp`.

    Options (all keyword-only, all with safe defaults):

    ``framing``: ``"ack"`` (8-byte header: ACKs, retransmission de-duplication,
    reply cache) or ``"raw"`` (the adapter's bytes are the whole datagram).
    ``timeout``: what ``timeout=None`` means in calls (default 5 s).
    ``retry``: the default :class:`RetryPolicy` of request() (default: one send).
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
    ) -> None:
        missing = [
            f"{name}()"
            for name in ("msg_to_raw", "raw_to_msg", "msg_key")
            if not callable(getattr(adapter, name, None))
        ]
        if missing:
            name = type(adapter).__name__
            raise TypeError(f"{name} is not an adapter: it lacks {', '.join(missing)}")
        if not timeout > 0 or math.isinf(timeout):
            raise ValueError("the default timeout must be positive and finite")
        if max_pending < 1:
            raise ValueError("max_pending must be at least 1")
        self._loop = asyncio.get_running_loop()
        self._transport = transport
        self._log = RateLimitedLog(logger if logger is not None else _LOG)
        self._core: Endpoint[M] = Endpoint(
            adapter,
            framing=framing,
            max_datagram_size=transport.max_datagram_size,
            max_queue=max_queue,
            check_source=check_source,
            delivery_log=DeliveryLog(
                ttl=dedup_ttl, capacity=dedup_capacity, reply_bytes=reply_cache_bytes
            ),
            rtt=RttTable(),
            rng=random.Random(seed),
            report=self._report_drop,
        )
        self._timeout = timeout
        self._retry = retry
        self._notify_retry = notify_retry if notify_retry is not None else ADAPTIVE
        self._max_pending = max_pending
        self._addrs: dict[Any, Address] = {}
        self._getters: deque[asyncio.Future[None]] = deque()
        self._room: deque[asyncio.Future[None]] = deque()
        # Takes every incoming message as it arrives instead of the queue's readers
        # (a Server with a plain-function handler); see _consume_with().
        self._consumer: Callable[[Received[M]], None] | None = None
        self._consumer_stopped: asyncio.Future[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._armed_at = math.inf
        self._closed = False
        # A transport may offer a cheaper send for the hot path (see LoopDatagramTransport).
        self._send: Callable[[bytes, Address], object] = getattr(
            transport, "fast_send", transport.send
        )
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
        return self._core.counters.snapshot()

    @property
    def pending(self) -> int:
        """Requests and notifies now waiting for a reply or an ACK."""
        return self._core.pending_count

    @property
    def queued(self) -> int:
        """Messages waiting in the incoming queue."""
        return len(self._core.inbox)

    def rto(self, addr: Address) -> float:
        """The adaptive retransmission timeout now estimated for ``addr``."""
        return self._core.rtt.rto(self._addrs.get(addr, addr))

    # ------------------------------------------------------------------ calls

    async def request(
        self,
        msg: M,
        addr: Address,
        *,
        timeout: float | None = None,
        retry: RetryPolicy | None = None,
    ) -> M:
        """Send ``msg`` to ``addr`` and return the reply with the same key.

        ``timeout`` (default: the dispatcher's) bounds the whole call; ``retry``
        (default: the dispatcher's ``retry``, else one send) says when to send
        the same datagram again. Raises :class:`RequestTimeout` when the timeout
        passes or the policy is spent, :class:`DuplicateKeyError` if the key is
        already pending, :class:`AdapterError`, :class:`MessageTooLarge`,
        :class:`TransportError` or :class:`DispatcherClosed`.
        """
        # _notify_call() for a request, written out: the hot path of the library,
        # one coroutine frame per request instead of a call and a coroutine.
        if self._closed:
            raise DispatcherClosed()
        dest = self._addrs.get(addr)
        if dest is None:
            dest = await self._resolve(addr)
        loop = self._loop
        now = loop.time()
        if timeout is None:
            timeout = self._timeout
        core = self._core
        if len(core.waiting) + len(core.acking) >= self._max_pending:
            now, timeout = await self._wait_for_room(now, timeout)
        fut = loop.create_future()
        try:
            p = core.start_request(
                msg, dest, fut, now, timeout, retry if retry is not None else self._retry
            )
        except BaseException:
            self._not_started()
            raise
        try:
            try:
                blocked = self._send(p.frame, dest)  # type: ignore[arg-type]
            except OSError as exc:
                self._first_send_failed(p, dest, exc)
                blocked = False
            if blocked:
                await self._wait_writable(p.deadline)
            if p.due < self._armed_at:
                self._arm(p.due)
            reply: M = await fut
            return reply
        finally:
            if not p.done:
                core.cancel(p)
                self._room_freed()

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
        when to send it again. With raw framing on a reliable transport (Unix
        datagram, a lossless memory link) it is once the datagram is handed to
        the kernel; a peer whose queue is full may still drop it. Raises
        :class:`ReliabilityUnavailable` on an unreliable transport with raw
        framing and :class:`RequestTimeout` when no ACK comes in time.
        """
        if self._closed:
            raise DispatcherClosed()
        if self._core.ack:
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

    def notify_unreliable(self, msg: M, addr: Address) -> Coroutine[Any, Any, None]:
        """Send ``msg`` once and return at once; nothing is retransmitted or confirmed."""
        # A plain method returning the coroutine: no extra frame on the serving hot path.
        return self._send_oneway(msg, addr, None)

    async def _notify_call(
        self, msg: M, addr: Address, timeout: float | None, policy: RetryPolicy
    ) -> None:
        """Register a notify in the core, send it, and wait for its ACK (as request() does)."""
        if self._closed:
            raise DispatcherClosed()
        dest = self._addrs.get(addr)
        if dest is None:
            dest = await self._resolve(addr)
        loop = self._loop
        now = loop.time()
        if timeout is None:
            timeout = self._timeout
        core = self._core
        if len(core.waiting) + len(core.acking) >= self._max_pending:
            now, timeout = await self._wait_for_room(now, timeout)
        fut = loop.create_future()
        try:
            p = core.start_notify(msg, dest, fut, now, timeout, policy)
        except BaseException:
            self._not_started()
            raise
        try:
            try:
                blocked = self._send(p.frame, dest)  # type: ignore[arg-type]
            except OSError as exc:
                self._first_send_failed(p, dest, exc)
                blocked = False
            if blocked:
                await self._wait_writable(p.deadline)
            if p.due < self._armed_at:
                self._arm(p.due)
            await fut
        finally:
            if not p.done:
                core.cancel(p)
                self._room_freed()

    def _not_started(self) -> None:
        """A call failed before it was registered: pass on the room it will not use."""
        if self._room:
            self._room_freed()

    def _first_send_failed(self, p: Pending, dest: Address, exc: OSError) -> None:
        """Raise the error of a failed first send, or count it as a loss the policy repairs.

        ``exc`` is a TransportError, or the OS error of a bare carrier.
        """
        if p.policy is None or not _transient(exc):
            raise _transport_error(exc, dest) from exc.__cause__ or exc
        self._send_failed(dest, exc)  # a loss like any other: the policy resends

    async def _send_oneway(self, msg: M, addr: Address, timeout: float | None) -> None:
        if self._closed:
            raise DispatcherClosed()
        dest = self._addrs.get(addr)
        if dest is None:
            dest = await self._resolve(addr)
        frame = self._core.frame_oneway(msg, dest)
        try:
            blocked = self._send(frame, dest)
        except OSError as exc:
            raise _transport_error(exc, dest) from exc.__cause__ or exc
        if blocked:
            wait = self._timeout if timeout is None else timeout
            await self._wait_writable(self._loop.time() + wait)

    async def _wait_writable(self, deadline: float) -> None:
        """Wait for room in the transport's send queue, until ``deadline``."""
        try:
            async with asyncio.timeout_at(deadline):
                await self._transport.wait_writable()
        except TimeoutError:
            raise RequestTimeout(
                "the transport's send queue stayed full until the timeout"
            ) from None
        if self._closed:
            raise DispatcherClosed()

    async def recv_from(self, timeout: float | None = None) -> Received[M]:
        """The next message that is not a reply: ``Received(msg, size, addr)``.

        Raises :class:`RequestTimeout` when ``timeout`` (default: the
        dispatcher's) passes, :class:`DispatcherClosed` once closed.
        """
        inbox = self._core.inbox
        if inbox and not self._closed:
            self._core.counters.consumed += 1
            return inbox.popleft()
        wait = self._timeout if timeout is None else timeout
        try:
            async with asyncio.timeout(wait):
                return await self._get()
        except TimeoutError:
            if self._closed:
                raise DispatcherClosed() from None
            raise RequestTimeout(f"no message arrived within {wait:g} s") from None

    async def _get(self) -> Received[M]:
        inbox = self._core.inbox
        while True:
            if self._closed:
                raise DispatcherClosed()
            if inbox:
                self._core.counters.consumed += 1
                return inbox.popleft()
            fut: asyncio.Future[None] = self._loop.create_future()
            self._getters.append(fut)
            try:
                await fut
            except BaseException:
                if fut.done() and not fut.cancelled():
                    self._wake_getters()  # pass our wake-up on to another reader
                else:
                    fut.cancel()
                    _discard(self._getters, fut)
                raise

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Received[M]:
        inbox = self._core.inbox
        if inbox and not self._closed:  # the common case under load: no wait, no extra frame
            self._core.counters.consumed += 1
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
        self._armed_at = math.inf
        self._transport.close()
        self._log.flush()
        self._stop_consuming()
        for p in self._core.close():
            waiter = p.waiter
            p.waiter = None
            if waiter is not None and not waiter.done():
                waiter.set_exception(DispatcherClosed("the dispatcher closed while waiting"))
        for queue in (self._getters, self._room):
            while queue:
                fut = queue.popleft()
                if not fut.done():
                    fut.set_result(None)  # the woken call sees _closed and raises
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
        core = self._core
        p = core.receive(data, addr, self._loop.time())
        if p is not None:
            waiter = p.waiter
            p.waiter = None
            if not waiter.done():
                waiter.set_result(p.result)
            if self._room:
                self._room_freed()
            if core.outbox:
                self._flush()
            return  # a completed call queues nothing for the application
        if core.outbox:
            self._flush()
        inbox = core.inbox
        if inbox:
            consumer = self._consumer
            if consumer is not None:  # (never set once closed)
                core.counters.consumed += 1
                consumer(inbox.popleft())
                if inbox:  # only if the consumer changed meanwhile, or let some wait
                    self._consume()
            elif self._getters:
                self._wake_getters()

    def error_received(self, exc: Exception) -> None:
        self._core.counters.transport_errors += 1
        self._log(logging.WARNING, "transport", "transport error: %s", exc)

    # ------------------------------------------------------------------ internals

    def _flush(self) -> None:
        outbox = self._core.outbox
        send = self._send
        for data, addr in outbox:
            try:
                send(data, addr)
            except OSError as exc:
                self._send_failed(addr, exc)
        outbox.clear()

    def _consume_with(self, consumer: Callable[[Received[M]], None]) -> asyncio.Future[None]:
        """Hand every incoming message to ``consumer`` as it arrives, not to the queue.

        Messages already queued are handed over at once. Returns a future that
        completes when :meth:`_stop_consuming` is called or the dispatcher closes.
        Meanwhile readers of recv_from() and ``async for`` get nothing.
        """
        if self._consumer is not None:
            raise RuntimeError("this dispatcher already hands its messages to a consumer")
        stopped: asyncio.Future[None] = self._loop.create_future()
        if self._closed:
            stopped.set_result(None)
            return stopped
        self._consumer = consumer
        self._consumer_stopped = stopped
        if self._core.inbox:
            self._consume()
        return stopped

    def _stop_consuming(self) -> None:
        """Undo :meth:`_consume_with`: messages queue for readers again."""
        self._consumer = None
        stopped, self._consumer_stopped = self._consumer_stopped, None
        if stopped is not None and not stopped.done():
            stopped.set_result(None)
        if self._core.inbox and self._getters:
            self._wake_getters()

    def _consume(self) -> None:
        inbox = self._core.inbox
        counters = self._core.counters
        while inbox:
            consumer = self._consumer
            if consumer is None or self._closed:
                return
            counters.consumed += 1
            consumer(inbox.popleft())

    def _send_failed(self, addr: Address, exc: Exception) -> None:
        self._core.counters.transport_errors += 1
        self._log(logging.WARNING, "send", "could not send to %r: %s", addr, exc)

    def _wake_getters(self) -> None:
        getters = self._getters
        n = len(self._core.inbox)
        while getters and n:
            fut = getters.popleft()
            if not fut.done():
                fut.set_result(None)
                n -= 1

    def _arm(self, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._armed_at = when
        self._timer = self._loop.call_at(when, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._armed_at = math.inf
        core = self._core
        expired = core.handle_timer(self._loop.time() + _TIMER_SLACK)
        if core.outbox:
            self._flush()
        for p in expired:
            waiter = p.waiter
            p.waiter = None
            if waiter is not None and not waiter.done():
                waiter.set_exception(_timeout_error(p, self._loop.time()))
        if expired and self._room:
            self._room_freed()
        when = core.next_deadline()
        if when is not None:
            self._arm(when)

    async def _wait_for_room(self, now: float, timeout: float) -> tuple[float, float]:
        """Wait until fewer than max_pending calls are in flight; return (now, time left)."""
        loop = self._loop
        deadline = now + timeout
        while self._core.pending_count >= self._max_pending:
            fut: asyncio.Future[None] = loop.create_future()
            self._room.append(fut)
            try:
                async with asyncio.timeout_at(deadline):
                    await fut
            except BaseException as exc:
                if fut.done() and not fut.cancelled():
                    self._room_freed()  # woken but leaving: pass the room on
                else:
                    fut.cancel()
                    _discard(self._room, fut)
                if not isinstance(exc, TimeoutError):
                    raise
                raise RequestTimeout(
                    f"no room among the {self._max_pending} pending calls before the timeout"
                ) from None
            if self._closed:
                raise DispatcherClosed()
        now = loop.time()
        return now, max(deadline - now, 0.0)

    def _room_freed(self) -> None:
        room = self._room
        free = self._max_pending - self._core.pending_count
        while room and free > 0:
            fut = room.popleft()
            if not fut.done():
                fut.set_result(None)
                free -= 1

    async def _resolve(self, addr: Any) -> Address:
        try:
            dest = await self._transport.resolve(addr)
        except TypeError as exc:
            raise TransportError(f"{addr!r} is not an address: {exc}") from exc
        if self._closed:
            raise DispatcherClosed()
        addrs = self._addrs
        if len(addrs) >= _ADDR_CACHE_MAX:
            addrs.clear()
        try:
            addrs[addr] = dest
        except TypeError:
            pass  # an unhashable address is resolved on every call
        return dest

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


def _transient(exc: OSError) -> bool:
    cause = exc.__cause__ if isinstance(exc, TransportError) else exc
    return isinstance(cause, OSError) and cause.errno in _TRANSIENT_ERRNOS


def _transport_error(exc: OSError, addr: Address) -> TransportError:
    if isinstance(exc, TransportError):
        return exc
    return TransportError(f"cannot send to {addr!r}: {exc}")


def _discard(queue: deque[asyncio.Future[None]], fut: asyncio.Future[None]) -> None:
    with contextlib.suppress(ValueError):
        queue.remove(fut)


def _timeout_error(p: Pending, now: float) -> RequestTimeout:
    what = "reply to request" if p.kind == REQUEST else "ACK for notify"
    key: Hashable = p.key
    return RequestTimeout(
        f"no {what} {key!r} from {p.addr!r} after {p.attempts} attempt(s) "
        f"in {now - p.sent_at:.3f} s",
        key=key,
        addr=p.addr,
        attempts=p.attempts,
    )
