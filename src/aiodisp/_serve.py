"""Handler-style serving: answer every incoming message with ``await handler(msg, addr)``.

A :class:`Server` reads the dispatcher's incoming messages, runs the handler on
each with at most ``concurrency`` handlers in flight, and sends what a handler
returns back to the sender with ``notify_unreliable`` (over ACK framing the
dispatcher's reply cache answers a retransmitted request from the cached reply,
without running the handler again). While ``concurrency`` handlers are busy the
server reads nothing more: the dispatcher's queue fills, and past ``max_queue``
new messages are dropped and not ACKed, so reliable senders back off and retry.

A handler that raises is counted (:attr:`ServeStats.errors`), logged at a
bounded rate on the ``aiodisp.serve`` logger and, if given, reported to
``on_error``; serving goes on. When the dispatcher closes, handlers still running
are cancelled (their replies could no longer be sent) and awaited, and
:meth:`Server.run` returns normally. Cancelling the task running it cancels and
awaits every handler, then re-raises the cancellation.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast

from ._ratelog import RateLimitedLog
from .errors import DispatcherClosed, DispatchError, TransportError

if TYPE_CHECKING:
    from ._core.endpoint import Received
    from ._dispatcher import DirectServing, Dispatcher

__all__ = ["ServeStats", "Server", "serve"]

M = TypeVar("M")

#: A coroutine function, or a plain function returning the reply (or None).
Handler = Callable[[M, Any], Awaitable[M | None] | M | None]
#: ``on_error(exc, msg, addr)``: called for every handler exception and failed reply send.
ErrorCallback = Callable[[BaseException, Any, Any], object]

_LOG = logging.getLogger("aiodisp.serve")


@dataclass(frozen=True, slots=True)
class ServeStats:
    """What a :class:`Server` has done so far (``Server.stats``)."""

    #: messages handed to the handler
    handled: int = 0
    #: replies sent (the handler returned something other than None)
    replied: int = 0
    #: handler calls that raised an exception
    errors: int = 0
    #: replies that could not be sent (adapter error, too large, transport error)
    send_errors: int = 0
    #: handlers cancelled because serving stopped (the dispatcher closed or run() was cancelled)
    cancelled: int = 0
    #: handlers running right now
    in_flight: int = 0


class Server(Generic[M]):
    """Runs ``handler`` on every message a dispatcher receives; see the module docs.

    ``concurrency`` bounds the handlers running at once (default 64).
    ``on_error(exc, msg, addr)`` is called for each handler exception and each
    reply that could not be sent. ``logger`` (default ``aiodisp.serve``) gets
    at most a few lines per kind of failure every 10 s.
    """

    def __init__(
        self,
        dispatcher: Dispatcher[M],
        handler: Handler[M],
        *,
        concurrency: int = 64,
        on_error: ErrorCallback | None = None,
        logger: logging.Logger | None = None,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self._dispatcher = dispatcher
        self._handler = handler
        # A plain function runs inline, from the receive path: no task per message.
        self._inline = not _is_coroutine_function(handler)
        # ... and answers plain messages straight from the transport where it can
        # (see _direct_receiver; off: the core's path, for tests of the copy)
        self._direct = True
        # ... reading the socket itself where the transport allows (off: the direct
        # receiver alone, for tests of the copy)
        self._fused = True
        self._concurrency = concurrency
        self._on_error = on_error
        self._log = RateLimitedLog(logger if logger is not None else _LOG)
        self._tasks: set[asyncio.Task[None]] = set()
        self._running = False
        self._handled = 0
        self._replied = 0
        # messages the direct receiver handled and answered, each counted once for
        # this server's handled and replied and the dispatcher's delivered and
        # notifies (the core's ``counters.served``): the direct runs before, and
        # the core's count when the current one began (None: no direct run now)
        self._answered = 0
        self._served_from: int | None = None
        self._errors = 0
        self._send_errors = 0
        self._cancelled = 0

    @property
    def stats(self) -> ServeStats:
        """A snapshot of the server's counters."""
        answered = self._answered
        if self._served_from is not None:
            answered += self._dispatcher._core.counters.served - self._served_from
        return ServeStats(
            handled=self._handled + answered,
            replied=self._replied + answered,
            errors=self._errors,
            send_errors=self._send_errors,
            cancelled=self._cancelled,
            in_flight=len(self._tasks),
        )

    async def run(self) -> ServeStats:
        """Serve until the dispatcher closes; return the final :attr:`stats`.

        A server runs once at a time; running it again after it returned
        serves again and keeps counting.
        """
        if self._running:
            raise RuntimeError("this Server is already running")
        self._running = True
        room = asyncio.Semaphore(self._concurrency)
        try:
            if self._inline:
                await self._run_inline(room)
            messages = aiter(self._dispatcher)
            while True:
                await room.acquire()  # read nothing more while every slot is busy
                try:
                    msg, _size, addr = await anext(messages)
                except StopAsyncIteration:
                    room.release()
                    break
                except BaseException:
                    room.release()
                    raise
                self._handled += 1
                task = asyncio.create_task(self._handle(msg, addr))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
                task.add_done_callback(lambda _t: room.release())
        finally:
            await self._stop_handlers()
            self._running = False
        return self.stats

    async def _run_inline(self, room: asyncio.Semaphore) -> None:
        """Call the handler from the receive path until the dispatcher closes.

        Meets the dispatcher through its serving seam only: ``_consume_with`` /
        ``_stop_consuming`` to take each message as it arrives, ``_reply_nowait``
        for the reply. If the handler returns an awaitable after all, that one
        runs as a task and serving goes on as for a coroutine handler
        (``self._inline`` is off).
        """
        d = self._dispatcher
        reply_nowait = d._reply_nowait
        handler = self._handler
        # The type of the last reply found not awaitable: checking the type is cheaper
        # than hasattr(reply, "__await__"), which raises and clears an AttributeError
        # inside for every plain reply (raw server: 28.7k -> 28.4k instructions per request).
        plain: type = type(None)

        def handle_now(item: Received[M]) -> None:
            nonlocal plain
            msg, _size, addr = item
            self._handled += 1
            try:
                reply = handler(msg, addr)
            except (Exception, asyncio.CancelledError) as exc:
                # (a CancelledError here is the handler's own: it must not end the loop)
                self._handler_raised(exc, msg, addr)
                return
            if reply is None:
                return
            if type(reply) is not plain:
                if hasattr(reply, "__await__"):
                    self._serve_with_tasks(handle_now, reply, msg, addr, room)
                    return
                plain = type(reply)
            try:
                reply_nowait(reply, addr)  # type: ignore[arg-type]  # (cast() costs a call)
            except DispatchError as exc:  # AdapterError, MessageTooLarge, TransportError
                self._reply_failed(exc, msg, addr)
                return
            self._replied += 1

        parts = d._direct_serving() if self._direct else None
        direct = reader = None
        if parts is not None:
            direct, reader = self._direct_receiver(parts, handle_now, room)
            self._served_from = parts.counters.served
        try:
            await d._consume_with(handle_now, direct, reader if self._fused else None)
        finally:
            d._stop_consuming(handle_now)
            self._direct_stopped()

    def _direct_stopped(self) -> None:
        """The direct receiver takes no more datagrams: keep what it answered."""
        if self._served_from is not None:
            self._answered += self._dispatcher._core.counters.served - self._served_from
            self._served_from = None

    def _direct_receiver(
        self,
        parts: DirectServing[M],
        handle_now: Callable[[Received[M]], None],
        room: asyncio.Semaphore,
    ) -> tuple[Callable[[bytes, Any], None], Callable[[], None] | None]:
        """The receiver that answers plain messages straight from the transport, and
        on a transport with ``read_path`` (SocketTransport, plain reading) a reader
        of the socket that does the same for each datagram it reads.

        Raw framing with no message layer only (see ``Dispatcher._direct_serving``).
        Per datagram it does what the core's ``receive``, the inline consumer
        above, ``frame_oneway`` and ``_reply_nowait`` do for a message that is
        no reply, without the Received tuple, the inbox round trip, the clock
        and their frames: decode, key, the reply check against the pending
        requests, ``delivered``, the handler, the reply's bytes, ``notifies``,
        the send. Everything else goes where it went before (``parts.receive``,
        the dispatcher's own receive, which counts and reports it or completes
        a call: the adapter decodes such a datagram twice), and so does every
        datagram while messages are queued (they go first). A reply that is
        not plain bytes, or too large, goes through ``_reply_nowait``.

        A copy kept for speed; tests/driver/test_serve_direct.py drives it and
        the core's path through the same cases. Measured with callgrind under
        dnsperf (``benchmarks/dnsperf_serving.py --callgrind --queries 2000
        --timeout 5``): the core's path 32,500 instructions per query on the
        default loop, 31,500 on uvloop; this one 22,800 and 21,400 (with the
        transports' ``reply_path``), then 20,900 and 19,500 (no key asked of a
        message that is no reply: -1,300; one counter, ``counters.served``, for
        four: -600); the hand-rolled responders 16,300 and 16,400. Of the
        difference left, about 1,900 are the adapter's three methods and the
        handler's own frame, which the hand-rolled responder does not have, and
        2,000 this function's own work (``benchmarks/serve_path_instructions.py``).
        """
        d = self._dispatcher
        handler = self._handler
        receive = parts.receive
        raw_to_msg = parts.raw_to_msg
        msg_key = parts.msg_key
        is_reply = parts.is_reply
        msg_to_raw = parts.msg_to_raw
        waiting = parts.waiting
        inbox = parts.inbox
        counters = parts.counters
        max_size = parts.max_datagram_size
        send = parts.send
        full = parts.full
        # send_best_effort in pieces where the transport has them (SocketTransport):
        # sendto while no destination has a send queue (else ``send``)
        path = getattr(d.transport, "reply_path", None) if not full else None
        sendto: Callable[[bytes, Any], object]
        queued: Any
        failed: Callable[[bytes, Any, Exception], object]  # (what send_best_effort returns)
        if path is None:  # ``send`` itself, never queued here, its exceptions re-raised
            sendto, queued, failed = send, (), _reraise
        else:
            sendto, queued, failed = path
        plain: type = type(None)  # as in handle_now

        def direct(data: bytes, addr: Any) -> None:
            nonlocal plain
            if len(data) > max_size or not data or inbox:
                receive(data, addr)  # oversize, empty (the core counts them), or after the queued
                return
            try:
                msg = raw_to_msg(data)
                # Without is_reply, a key with a pending request is the core's to
                # decide (a reply, or a message from elsewhere). With it, no key is
                # asked of a message that is no reply, as in the core.
                ours = waiting.get(msg_key(msg)) is not None if is_reply is None else is_reply(msg)
            except Exception:
                ours = True  # the core counts and reports it
            if ours:
                receive(data, addr)
                return
            # Delivered (the core's count) and handled: counted here on every path
            # but an answer's, which counts once as both and as its reply
            # (``counters.served``).
            try:
                reply = handler(msg, addr)
            except (Exception, asyncio.CancelledError) as exc:
                self._direct_raised(exc, msg, addr)
                return
            if reply is None:
                counters.delivered += 1
                self._handled += 1
                return
            if type(reply) is not plain:
                if hasattr(reply, "__await__"):
                    self._not_answered()
                    self._serve_with_tasks(handle_now, reply, msg, addr, room)
                    return
                plain = type(reply)
            try:
                raw = msg_to_raw(reply)  # type: ignore[arg-type]  # (cast() costs a call)
            except Exception:
                raw = None
            if type(raw) is not bytes or len(raw) > max_size:
                # not bytes, too large, or the adapter failed: _reply_nowait says why
                self._direct_reply_slow(reply, msg, addr)  # type: ignore[arg-type]
                return
            if queued:
                self._send_reply(send, (raw, addr), full, msg, addr)
                return
            try:
                answer = sendto(raw, addr)
            except Exception as exc:
                self._send_reply(failed, (raw, addr, exc), full, msg, addr)
                return
            if answer is full:  # (a raw sendto answers a byte count: never ``full``)
                self._direct_full(msg, addr)
                return
            counters.served += 1

        read_path = getattr(d.transport, "read_path", None)
        if read_path is None:
            return direct, None
        recvfrom, bufsize, batch, begin, read_failed = read_path
        transport: Any = d.transport

        def reader() -> None:
            """The transport's read loop (SocketTransport._read_plain) with ``direct``
            written out in it, its returns as ``continue``, and the answers counted
            once a batch. A copy kept for speed (dnsperf under callgrind, default
            loop: 20,892 -> 19,840 instructions a query); the tests in
            tests/driver/test_serve_reader.py run it against ``direct`` alone."""
            nonlocal plain
            if not begin():
                return
            served = 0
            try:
                for _ in range(batch):
                    try:
                        data, addr = recvfrom(bufsize)
                    except (BlockingIOError, InterruptedError):
                        return
                    except OSError as exc:
                        read_failed(exc)
                        return
                    if len(data) > max_size or not data or inbox:
                        receive(data, addr)
                        if transport.stop_reading:
                            return
                        continue
                    try:
                        msg = raw_to_msg(data)
                        if is_reply is None:
                            ours = waiting.get(msg_key(msg)) is not None
                        else:
                            ours = is_reply(msg)
                    except Exception:
                        ours = True
                    if ours:
                        receive(data, addr)
                        if transport.stop_reading:
                            return
                        continue
                    try:
                        reply = handler(msg, addr)
                    except (Exception, asyncio.CancelledError) as exc:
                        self._direct_raised(exc, msg, addr)
                        if transport.stop_reading:
                            return
                        continue
                    if reply is None:
                        counters.delivered += 1
                        self._handled += 1
                        if transport.stop_reading:
                            return
                        continue
                    if type(reply) is not plain:
                        if hasattr(reply, "__await__"):
                            self._not_answered()
                            # (serving goes on with tasks: this reader is removed)
                            self._serve_with_tasks(handle_now, reply, msg, addr, room)
                            return
                        plain = type(reply)
                    try:
                        raw = msg_to_raw(reply)  # type: ignore[arg-type]
                    except Exception:
                        raw = None
                    if type(raw) is not bytes or len(raw) > max_size:
                        self._direct_reply_slow(reply, msg, addr)  # type: ignore[arg-type]
                    elif queued:
                        self._send_reply(send, (raw, addr), full, msg, addr)
                    else:
                        try:
                            answer = sendto(raw, addr)
                        except Exception as exc:
                            self._send_reply(failed, (raw, addr, exc), full, msg, addr)
                        else:
                            if answer is full:
                                self._direct_full(msg, addr)
                            else:
                                served += 1
                    if transport.stop_reading:  # closed (by the handler, say), or yield_reading()
                        return
            finally:
                counters.served += served

        return direct, reader

    # -- the direct receiver's and the socket reader's paths off the fast one

    def _not_answered(self, *, notify: bool = False) -> None:
        """The counts for a message not answered on the fast path: delivered and
        handled, and the reply counted as sent (``notify``) as the core's
        ``frame_oneway`` does."""
        counters = self._dispatcher._core.counters
        counters.delivered += 1
        self._handled += 1
        if notify:
            counters.notifies += 1

    def _direct_raised(self, exc: BaseException, msg: M, addr: Any) -> None:
        self._not_answered()
        self._handler_raised(exc, msg, addr)

    def _direct_reply_slow(self, reply: M, msg: M, addr: Any) -> None:
        """A reply that is not bytes, too large, or that the adapter failed to
        encode: ``_reply_nowait`` sends it or says why not."""
        self._not_answered()
        try:
            self._dispatcher._reply_nowait(reply, addr)
        except DispatchError as exc:
            self._reply_failed(exc, msg, addr)
            return
        self._replied += 1

    def _direct_full(self, msg: M, addr: Any) -> None:
        self._not_answered(notify=True)
        self._reply_failed(_queue_full(addr), msg, addr)

    def _send_reply(
        self, send: Callable[..., object], args: tuple[Any, ...], full: bool, msg: M, addr: Any
    ) -> None:
        """A reply sent by ``send(*args)`` off the fast path (through a send queue, or
        after the socket refused it), counted and its failure reported as the
        inline consumer does with ``_reply_nowait``."""
        self._not_answered(notify=True)
        try:
            answer = send(*args)
        except Exception as exc:
            self._reply_failed(_cannot_send(addr, exc), msg, addr)
            return
        if answer is full:
            self._reply_failed(_queue_full(addr), msg, addr)
            return
        self._replied += 1

    def _serve_with_tasks(
        self,
        consumer: Callable[[Received[M]], None],
        reply: Awaitable[M | None],
        msg: M,
        addr: Any,
        room: asyncio.Semaphore,
    ) -> None:
        """The handler returned an awaitable: it is no plain function after all. Stop
        taking messages inline, and finish this one as a task (serving goes on with
        tasks)."""
        self._inline = False
        self._dispatcher._stop_consuming(consumer)
        self._direct_stopped()
        task = asyncio.create_task(self._finish_awaitable(reply, msg, addr, room))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _finish_awaitable(
        self, reply: Awaitable[M | None], msg: M, addr: Any, room: asyncio.Semaphore
    ) -> None:
        async with room:  # a slot among ``concurrency``, like every handler task
            await self._handle(msg, addr, reply)

    async def _handle(
        self, msg: M, addr: Any, started: Awaitable[M | None] | M | None = None
    ) -> None:
        try:
            if started is None:
                started = self._handler(msg, addr)
            # a plain handler that returned a plain reply this time: nothing to await
            reply = await started if inspect.isawaitable(started) else started
        except asyncio.CancelledError:
            self._cancelled += 1
            raise
        except Exception as exc:
            self._handler_raised(exc, msg, addr)
            return
        if reply is None:
            return
        try:
            await self._dispatcher.notify_unreliable(cast("M", reply), addr)
        except DispatcherClosed:
            return  # closing: the reply can no longer go out
        except DispatchError as exc:
            self._reply_failed(exc, msg, addr)
            return
        self._replied += 1

    def _handler_raised(self, exc: BaseException, msg: M, addr: Any) -> None:
        self._errors += 1
        self._report("handler", exc, msg, addr)

    def _reply_failed(self, exc: DispatchError, msg: M, addr: Any) -> None:
        self._send_errors += 1
        self._report("reply", exc, msg, addr)

    def _report(self, kind: str, exc: BaseException, msg: M, addr: Any) -> None:
        what = "the handler raised" if kind == "handler" else "could not send the reply"
        self._log(
            logging.ERROR,
            kind,
            "%s on a message from %r: %s",
            what,
            addr,
            "".join(traceback.format_exception(exc)).rstrip(),
        )
        if self._on_error is not None:
            try:
                self._on_error(exc, msg, addr)
            except Exception as cb_exc:
                self._log(logging.ERROR, "on_error", "on_error raised: %r", cb_exc)

    async def _stop_handlers(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if not tasks:
            return
        # Wait for every handler even if we are cancelled meanwhile; re-raise that after.
        gathered = asyncio.gather(*tasks, return_exceptions=True)
        interrupted: asyncio.CancelledError | None = None
        while not gathered.done():
            try:
                await asyncio.shield(gathered)
            except asyncio.CancelledError as exc:
                interrupted = exc
        if interrupted is not None:
            raise interrupted


async def serve(
    dispatcher: Dispatcher[M],
    handler: Handler[M],
    *,
    concurrency: int = 64,
    on_error: ErrorCallback | None = None,
) -> None:
    """Answer every message ``dispatcher`` receives with ``await handler(msg, addr)``.

    Runs until the dispatcher closes. See :class:`Server` (which also keeps
    counts) for the details; ``Dispatcher.serve(handler, concurrency=...)``
    calls this.
    """
    await Server(dispatcher, handler, concurrency=concurrency, on_error=on_error).run()


def _reraise(data: bytes, addr: Any, exc: Exception) -> object:
    """``failed`` for a transport's own send: what it raised, raised again."""
    raise exc


def _cannot_send(addr: Any, exc: Exception) -> TransportError:
    """The error ``_reply_nowait`` raises for a send that raised ``exc``."""
    error = TransportError.cannot_send(addr, exc)
    error.__cause__ = exc.__cause__ or exc  # (raise ... from exc.__cause__ or exc)
    error.__suppress_context__ = True
    return error


def _queue_full(addr: Any) -> TransportError:
    """The error ``_reply_nowait`` raises when the transport's send queue is full."""
    return TransportError(f"cannot send to {addr!r} now: the transport's send queue is full")


def _is_coroutine_function(handler: object) -> bool:
    if inspect.iscoroutinefunction(handler):
        return True
    # an object whose __call__ is a coroutine function counts as one too
    call = type(handler).__call__
    return inspect.iscoroutinefunction(call)
