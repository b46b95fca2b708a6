"""``aiodisp serve``: an echo server, in one process or several on one UDP port.

Stops cleanly on SIGTERM (exit status 0) or SIGINT (130, as a shell expects of
Ctrl-C) and prints how many messages each process echoed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from typing import Any

import aiodisp
from aiodisp import DispatchError

from .args import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    UsageError,
    Where,
    count_arg,
    fail,
    listen_arg,
    parse_address,
)
from .echo import buffer_sizes, open_echo
from .formats import Format, make_format
from .workers import READY, Worker, WorkerFailed, say, stop_when_parent_leaves

__all__ = ["DEFAULT_LISTEN", "add_parser", "prepare", "serve"]

DEFAULT_LISTEN = "127.0.0.1:9000"


def add_parser(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    """Register ``serve``."""
    p = sub.add_parser(
        "serve", parents=[common], help="run an echo server that answers every message",
        description="Echo every message back to its sender as a reply (the reply flag set). "
        "Stops cleanly on SIGTERM (exit status 0) or Ctrl-C (130) and prints how many "
        "messages each process echoed.",
    )
    where = p.add_mutually_exclusive_group()
    where.add_argument(
        "--listen", type=listen_arg, metavar="HOST:PORT",
        help=f"UDP address to listen on (default {DEFAULT_LISTEN}; port 0 picks a free one; "
        "unix:PATH as --unix PATH)",
    )
    where.add_argument("--unix", metavar="PATH", help="listen on a Unix datagram socket instead")
    p.add_argument(
        "--workers", type=count_arg(1), default=1, metavar="N",
        help="serve one UDP port from N processes (SO_REUSEPORT; default 1)",
    )
    p.add_argument(
        "--sockbuf", type=count_arg(0), default=None, metavar="BYTES",
        help="ask the kernel for BYTES-byte receive and send buffers on the UDP socket "
        "(capped by net.core.rmem_max / wmem_max; 0: the OS default; "
        "default: aiodisp.open_udp's)",
    )
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)


def prepare(args: argparse.Namespace) -> tuple[Format[Any], Where]:
    """Check what argparse cannot; the format and the place to serve."""
    if args.unix is not None:
        where = Where("unix", args.unix)
    elif args.listen is not None:
        where = args.listen
    else:
        where = parse_address(DEFAULT_LISTEN)
    if where.kind == "unix":
        if args.workers > 1:
            raise UsageError("--workers needs a UDP --listen address")
        if args.sockbuf is not None:
            raise UsageError("--sockbuf needs a UDP --listen address")
    return make_format(args), where


async def serve(args: argparse.Namespace, fmt: Format[Any], where: Where) -> int:
    """Run the echo server (and ``--workers - 1`` child processes) until stopped."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    stopped_by: list[int] = []

    def on_signal(sig: int) -> None:
        stopped_by.append(sig)
        stop.set()

    if args.child:  # its parent stops it; Ctrl-C is the parent's to handle
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        stop_when_parent_leaves(loop, stop.set)
    signals = (signal.SIGTERM,) if args.child else (signal.SIGINT, signal.SIGTERM)
    for sig in signals:
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        return await _serve(args, fmt, where, stop, stopped_by)
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)


async def _serve(
    args: argparse.Namespace, fmt: Format[Any], where: Where, stop: asyncio.Event,
    stopped_by: list[int],
) -> int:
    reuse = args.workers > 1 or args.reuse_port
    try:
        d = await open_echo(where, args.framing, fmt, reuse_port=reuse, sockbuf=args.sockbuf)
    except DispatchError as exc:
        return fail("serve", str(exc))
    here = Where(where.kind, d.local_addr[:2] if where.kind == "udp" else d.local_addr)
    serving = asyncio.create_task(aiodisp.Server(d, fmt.echo).run())
    workers: list[Worker] = []
    status = EXIT_OK
    try:
        for _ in range(args.workers - 1):
            worker = Worker(args, here, reuse_port=True)
            workers.append(worker)
            await worker.start()
        if args.child:
            say(f"{READY} {here.hostport}")
        else:
            say(f"aiodisp serve: listening on {here} ({_describe(args, fmt, d)}); "
                "stop with Ctrl-C or SIGTERM")
        status = await _until_stopped(stop, serving, workers)
    except WorkerFailed as exc:
        status = fail("serve", str(exc))
    finally:
        await d.close()
        stats = await serving
        for worker in workers:
            if await worker.stop() != 0:
                status = EXIT_FAILED
    plural = "" if stats.handled == 1 else "s"
    say(f"aiodisp serve: pid {os.getpid()} echoed {stats.handled} message{plural}")
    if status == EXIT_OK and signal.SIGINT in stopped_by:
        return EXIT_INTERRUPTED
    return status


def _describe(args: argparse.Namespace, fmt: Format[Any], d: aiodisp.Dispatcher[Any]) -> str:
    what = f"{args.framing} framing, {fmt.name} messages"
    if args.workers > 1:
        what += f", {args.workers} worker processes"
    sizes = buffer_sizes(d) if args.sockbuf else None
    if sizes is not None:
        # Linux reports twice what it grants (the rest is its bookkeeping).
        rcv, snd = (sizes[0] // 2, sizes[1] // 2) if sys.platform == "linux" else sizes
        what += f", socket buffers {rcv} / {snd} bytes"
        if min(rcv, snd) < args.sockbuf:
            print(f"aiodisp serve: warning: asked for {args.sockbuf}-byte socket buffers, "
                  f"got {rcv} / {snd} (net.core.rmem_max and wmem_max cap them)",
                  file=sys.stderr)
    return what


async def _until_stopped(
    stop: asyncio.Event, serving: asyncio.Task[Any], workers: list[Worker]
) -> int:
    stopping = asyncio.create_task(stop.wait())
    watched: dict[asyncio.Future[Any], Worker] = {
        asyncio.ensure_future(w.wait()): w for w in workers
    }
    try:
        done, _ = await asyncio.wait(
            {stopping, serving, *watched}, return_when=asyncio.FIRST_COMPLETED
        )
    finally:
        for task in (stopping, *watched):
            task.cancel()
        await asyncio.gather(stopping, *watched, return_exceptions=True)
    for task in done:
        if task in watched:
            return fail("serve", f"worker process {watched[task].pid} exited unexpectedly")
    return EXIT_OK
