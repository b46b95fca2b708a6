"""``aiodisp bench``: request/reply throughput and latency against an echo server.

With no ``--target`` an echo server (``aiodisp serve``) is started in a child
process on loopback, pinned to another core than the client when the machine
has two; with ``--target HOST:PORT`` an existing one is measured, such as a
default ``aiodisp serve``: both speak the same framing and message format by
default, and a probe request finds out, before anything is measured, when the
target speaks another one (exit status 2, with the options to pass).

``--loss P`` puts a lossy path under the client (a
:class:`~aiodisp._transports.faults.FaultyTransport`, the memory link's fault
injection around a UDP socket): each datagram it sends or receives is dropped
with probability P, and requests retransmit by a :class:`~aiodisp.RetryPolicy`
(adaptive first wait, up to 10 attempts).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from aiodisp import DispatchError

from . import loop
from .args import (
    EXIT_FAILED,
    EXIT_OK,
    Where,
    count_arg,
    fail,
    positive_arg,
    udp_address_arg,
    udp_listen_arg,
)
from .bench_measure import BenchResult, measure, open_client
from .bench_probe import TargetProblem, check_target
from .bench_report import Progress, print_json, print_table
from .formats import Format, make_format
from .workers import Worker, WorkerFailed

__all__ = ["SOCKBUF", "add_parser", "run"]

#: Socket buffer bytes asked for by default: with the OS default (~200 KiB) replies
#: to a few hundred requests in flight overflow the receive buffer now and then.
SOCKBUF = 4 << 20


def add_parser(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    """Register ``bench``."""
    p = sub.add_parser(
        "bench", parents=[common],
        help="measure requests/s and latency against an aiodisp echo server",
        description=(
            "Measure request/reply throughput, latency percentiles and client CPU per "
            "request over UDP. Without --target, an echo server runs in a child process "
            "on loopback."
        ),
    )
    where = p.add_mutually_exclusive_group()
    where.add_argument("--target", type=udp_address_arg, metavar="HOST:PORT",
                       help="an echo server to measure (aiodisp serve, with the same options)")
    where.add_argument(
        "--serve", type=udp_listen_arg, metavar="HOST:PORT",
        help="only run an echo server at HOST:PORT until interrupted "
        "(aiodisp serve --listen HOST:PORT with bench's socket buffers)",
    )
    p.add_argument("--in-flight", type=count_arg(1), default=256,
                   help="requests in flight (default 256)")
    p.add_argument("--duration", type=positive_arg, default=5.0,
                   help="seconds to measure (default 5; see --count)")
    p.add_argument("--count", type=count_arg(1), default=None,
                   help="measure this many requests instead of --duration seconds")
    p.add_argument("--payload", type=count_arg(0), default=64, help="payload bytes (default 64)")
    p.add_argument("--timeout", type=positive_arg, default=2.0,
                   help="per-request timeout (default 2 s)")
    p.add_argument("--warmup", type=_seconds, default=0.3,
                   help="seconds of unmeasured load first (default 0.3)")
    p.add_argument(
        "--loss", type=_probability, default=0.0, metavar="P",
        help="drop each datagram the client sends or receives with probability P",
    )
    p.add_argument("--seed", type=int, default=None, help="seed of the loss (default: random)")
    p.add_argument(
        "--sockbuf", type=count_arg(0), default=SOCKBUF, metavar="BYTES",
        help="socket buffers of client and embedded server, capped by net.core.rmem_max "
             "(default 4 MiB: the default buffers overflow at a few hundred in flight; "
             "0: the OS default)",
    )
    p.add_argument("--no-pin", action="store_true", help="do not pin client and server to cores")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    # what `bench --serve` hands to the serve command
    p.set_defaults(workers=1, child=False, reuse_port=False, unix=None)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} must be a number of seconds, 0 or more")
    return value


def _probability(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"{text!r} must be in [0, 1)")
    return value


def run(args: argparse.Namespace) -> int:
    """Run ``aiodisp bench``; return the exit status."""
    fmt = make_format(args)
    loop.check_uvloop(args.uvloop)
    if args.serve is not None:
        from .serve import serve

        return loop.run(lambda: serve(args, fmt, args.serve), use_uvloop=args.uvloop)
    try:
        result = loop.run(lambda: _bench(args, fmt), use_uvloop=args.uvloop)
    except TargetProblem as exc:
        return fail("bench", str(exc), exc.status)
    except (DispatchError, OSError, WorkerFailed) as exc:
        return fail("bench", str(exc))
    if args.json:
        print_json(result)
    else:
        print_table(result)
    return EXIT_OK if result.completed and not result.mismatched else EXIT_FAILED


async def _bench(args: argparse.Namespace, fmt: Format[Any]) -> BenchResult:
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    pin = not args.no_pin and len(cpus) >= 2
    server: Worker | None = None
    try:
        if args.target is not None:
            target: Where = args.target
        else:
            server = Worker(args, Where("udp", ("127.0.0.1", 0)), reuse_port=False, relay=False)
            target = await server.start()
            if pin and server.pid is not None:
                os.sched_setaffinity(server.pid, {cpus[-1]})
        if pin:
            os.sched_setaffinity(0, {cpus[0]})
        return await _client(args, fmt, target)
    finally:
        if server is not None:
            await server.stop()
        if pin:
            os.sched_setaffinity(0, set(cpus))


async def _client(args: argparse.Namespace, fmt: Format[Any], target: Where) -> BenchResult:
    client, lossy = await open_client(args, fmt, target)
    progress = Progress(count=args.count, duration=args.duration,
                        quiet=args.json and not sys.stderr.isatty())
    try:
        await check_target(client, args.framing, fmt, target, lossy=lossy is not None,
                           json_fields=(args.key_field, args.reply_field))
        what = f"{args.count:,} requests" if args.count else f"{args.duration:g} s"
        progress.say(f"measuring {target} ({args.framing} framing, {fmt.name} messages, "
                     f"{args.in_flight} in flight) for {what} after {args.warmup:g} s of warm-up")
        with progress:
            return await measure(args, fmt, target, client, lossy, progress.update)
    finally:
        await client.close()
