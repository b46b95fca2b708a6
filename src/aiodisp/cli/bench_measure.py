"""The client side of ``aiodisp bench``: a closed-loop load, measured after a warm-up.

``in_flight`` workers each await one request at a time. The warm-up runs the
same load, then lets every warm-up request finish before anything is counted;
the measured phase starts its requests, lets every one of them end (its reply
or its timeout), and only then reads the counters. So every request started
in the measured phase is in exactly one of ``completed`` and ``timeouts``,
and ``stats`` (the dispatcher's counters over that phase) agrees with both.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import aiodisp
from aiodisp import Dispatcher, RequestTimeout, RetryPolicy, Stats

from .._transports.faults import FaultyTransport, Link
from .args import Where
from .formats import Format

__all__ = ["LOSSY_RETRY", "BenchResult", "Load", "Tally", "measure", "open_client"]

#: The retry policy of requests over a lossy path (``--loss``).
LOSSY_RETRY = RetryPolicy(initial_timeout=None, backoff=2.0, max_attempts=10, max_interval=0.5)


@dataclass
class BenchResult:
    """What one ``aiodisp bench`` run measured (``--json`` prints it)."""

    target: str
    framing: str
    format: str
    loop: str
    in_flight: int
    payload: int
    loss: float
    #: requests of the measured phase that got their (correct or wrong) reply
    completed: int = 0
    #: requests of the measured phase that ended in RequestTimeout
    timeouts: int = 0
    #: replies that were not the echo of their request
    mismatched: int = 0
    elapsed_s: float = 0.0
    requests_per_s: float = 0.0
    p50_ms: float = 0.0
    p90_ms: float = 0.0
    p99_ms: float = 0.0
    max_ms: float = 0.0
    cpu_us_per_request: float = 0.0
    retransmissions: int = 0
    dropped_by_loss: int = 0
    #: the client dispatcher's counters over the measured phase only
    stats: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Tally:
    """The outcomes of a phase's requests."""

    latencies: list[float] = field(default_factory=list)
    timeouts: int = 0
    mismatched: int = 0

    @property
    def ended(self) -> int:
        return len(self.latencies) + self.timeouts


class Load:
    """``in_flight`` workers, each sending one request at a time and awaiting it."""

    def __init__(
        self, client: Dispatcher[Any], fmt: Format[Any], dest: Any, *, payload: int,
        timeout: float, retry: RetryPolicy | None, in_flight: int,
    ) -> None:
        self._client = client
        self._fmt = fmt
        self._dest = dest
        self._body = fmt.bench_body(payload)
        self._timeout = timeout
        self._retry = retry
        self._in_flight = in_flight
        self._ids = itertools.count(1)

    async def run(self, tally: Tally, *, seconds: float | None, count: int | None) -> None:
        """Start requests for ``seconds`` (or until ``count`` have started); wait for all."""
        request = self._client.request
        message, is_echo = self._fmt.bench_message, self._fmt.is_echo
        dest, body, timeout, retry = self._dest, self._body, self._timeout, self._retry
        ids = self._ids
        latencies = tally.latencies
        clock = time.perf_counter
        left = itertools.count() if count is None else iter(range(count))
        stopped = False

        async def worker() -> None:
            for _ in left:
                if stopped:
                    return
                i = next(ids)
                t0 = clock()
                try:
                    reply = await request(message(i, body), dest, timeout=timeout, retry=retry)
                except RequestTimeout:
                    tally.timeouts += 1
                    continue
                latencies.append(clock() - t0)
                if not is_echo(reply, i, body):
                    tally.mismatched += 1

        def stop() -> None:
            nonlocal stopped
            stopped = True

        loop = asyncio.get_running_loop()
        timer = loop.call_later(seconds, stop) if seconds is not None else None
        workers = [asyncio.ensure_future(worker()) for _ in range(self._in_flight)]
        try:
            await asyncio.gather(*workers)
        finally:
            if timer is not None:
                timer.cancel()
            for w in workers:
                w.cancel()
            await asyncio.gather(*workers, return_exceptions=True)


async def open_client(
    args: argparse.Namespace, fmt: Format[Any], target: Where
) -> tuple[Dispatcher[Any], FaultyTransport | None]:
    """The bench's client dispatcher; with ``--loss``, on a lossy path (returned too).

    A load generator offers the load it is told to: ``--in-flight`` calls at
    once, each retried by its policy alone, so the client has no congestion
    window and no retry budget (they would measure the client's restraint, not
    the server).
    """
    bind = target.client_bind()
    buffer_size = args.sockbuf or None
    fixed_load: dict[str, Any] = {"congestion": False, "retry_budget": None}
    if not args.loss:
        client = await aiodisp.open_udp(fmt.adapter, bind, framing=args.framing,
                                        buffer_size=buffer_size, **fixed_load)
        return client, None
    lossy = FaultyTransport.over_udp(
        bind, Link(loss=args.loss, seed=args.seed), buffer_size=buffer_size
    )
    try:
        return aiodisp.Dispatcher(lossy, fmt.adapter, framing=args.framing,
                                  **fixed_load), lossy
    except BaseException:
        lossy.close()
        raise


def _lost(lossy: FaultyTransport | None) -> int:
    return 0 if lossy is None else lossy.counters.lost + lossy.received_counters.lost


async def measure(
    args: argparse.Namespace,
    fmt: Format[Any],
    target: Where,
    client: Dispatcher[Any],
    lossy: FaultyTransport | None,
    progress: Callable[[Tally, float], None],
) -> BenchResult:
    """Warm up, then measure ``client`` against ``target`` as ``args`` say."""
    load = Load(client, fmt, target.addr, payload=args.payload, timeout=args.timeout,
                retry=LOSSY_RETRY if args.loss else None, in_flight=args.in_flight)
    if args.warmup > 0:
        await load.run(Tally(), seconds=args.warmup, count=None)
    tally = Tally()
    before, lost_before = client.stats, _lost(lossy)
    cpu0, t0 = time.process_time(), time.perf_counter()

    async def tick() -> None:
        while True:
            await asyncio.sleep(0.1)
            progress(tally, time.perf_counter() - t0)

    ticker = asyncio.ensure_future(tick())
    try:
        await load.run(tally, seconds=None if args.count else args.duration, count=args.count)
    finally:
        ticker.cancel()
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    after = client.stats
    return _result(args, fmt, target, tally, elapsed, cpu, _delta(before, after),
                   _lost(lossy) - lost_before)


def _delta(before: Stats, after: Stats) -> dict[str, int]:
    start = before.as_dict()
    return {name: value - start[name] for name, value in after.as_dict().items()}


def _result(
    args: argparse.Namespace, fmt: Format[Any], target: Where, tally: Tally, elapsed: float,
    cpu: float, stats: dict[str, int], lost: int,
) -> BenchResult:
    loop_name = type(asyncio.get_running_loop()).__module__.split(".")[0]
    latencies = sorted(tally.latencies)
    n = len(latencies)
    result = BenchResult(
        target=target.hostport, framing=args.framing, format=fmt.name, loop=loop_name,
        in_flight=args.in_flight, payload=args.payload, loss=args.loss,
        completed=n, timeouts=tally.timeouts, mismatched=tally.mismatched,
        elapsed_s=elapsed, requests_per_s=n / elapsed if elapsed > 0 else 0.0,
        retransmissions=stats["retransmissions"], dropped_by_loss=lost, stats=stats,
    )
    if n:
        result.p50_ms = latencies[n // 2] * 1e3
        result.p90_ms = latencies[min(n - 1, int(n * 0.90))] * 1e3
        result.p99_ms = latencies[min(n - 1, int(n * 0.99))] * 1e3
        result.max_ms = latencies[-1] * 1e3
        result.cpu_us_per_request = cpu / n * 1e6
    return result
