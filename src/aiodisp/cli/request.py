"""``aiodisp request`` and ``aiodisp notify``: one exchange with a peer.

``-v`` says on stderr how the exchange went: how many times the message was
sent and how long the reply (or ACK) took.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from typing import Any

import aiodisp
from aiodisp import DispatchError, MessageTooLarge, RequestTimeout, RetryPolicy

from .args import (
    EXIT_OK,
    UsageError,
    Where,
    address_arg,
    count_arg,
    fail,
    positive_arg,
    read_message,
)
from .formats import Format, make_format

__all__ = ["add_parsers", "exchange", "prepare", "retry_policy"]


def add_parsers(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    """Register ``request`` and ``notify``."""
    for name, what in (("request", "send a request and print the reply"),
                       ("notify", "send a notification and wait for its ACK")):
        p = sub.add_parser(
            name, parents=[common], help=what,
            description=f"{what[0].upper()}{what[1:]}. The message is JSON, for instance "
            "'{\"id\": 1, \"body\": \"hi\"}', or - to read it from stdin.",
        )
        p.add_argument("address", type=address_arg, metavar="ADDRESS",
                       help="HOST:PORT, [IPV6]:PORT or unix:PATH")
        p.add_argument("message", metavar="MESSAGE", help="the message as JSON (-: from stdin)")
        p.add_argument("--timeout", type=positive_arg, default=2.0,
                       help="seconds to wait in all (default 2)")
        p.add_argument(
            "--retries", type=count_arg(0), default=2, metavar="N",
            help="sends after the first, spread over the timeout with doubling waits (default 2)",
        )
    sub.choices["notify"].add_argument(
        "--unreliable", action="store_true",
        help="send once and wait for nothing (the only kind of notify over raw UDP)",
    )


def prepare(args: argparse.Namespace) -> tuple[Format[Any], Any]:
    """Check what argparse cannot; the format and the message."""
    raw_udp = args.framing == "raw" and args.address.kind == "udp"
    if args.command == "notify" and raw_udp and not args.unreliable:
        raise UsageError("notify over UDP needs --framing ack (or --unreliable)")
    fmt = make_format(args)
    return fmt, fmt.from_json(read_message(args.message))


def retry_policy(timeout: float, retries: int) -> RetryPolicy:
    """``retries + 1`` sends whose doubling waits add up to ``timeout`` (first wait >= 20 ms)."""
    attempts = retries + 1
    first = max(timeout / (2**attempts - 1), 0.02) if attempts < 64 else 0.02
    return RetryPolicy(
        initial_timeout=first, backoff=2.0, max_attempts=attempts, max_interval=timeout
    )


async def exchange(args: argparse.Namespace, fmt: Format[Any], msg: Any) -> int:
    """Send ``msg`` as ``args.command`` says; print the reply or the outcome."""
    command: str = args.command
    where: Where = args.address
    tmpdir: str | None = None
    try:
        if where.kind == "unix":
            tmpdir = tempfile.mkdtemp(prefix="aiodisp-")
            d = await aiodisp.open_unix(fmt.adapter, os.path.join(tmpdir, "client.sock"),
                                        framing=args.framing)
        else:
            # open_udp's defaults: the dual-stack wildcard (any host), 4 MiB buffers,
            # a congestion window and a retry budget per peer
            d = await aiodisp.open_udp(fmt.adapter, framing=args.framing)
    except DispatchError as exc:
        if tmpdir is not None:
            shutil.rmtree(tmpdir, ignore_errors=True)
        return fail(command, f"cannot open a socket: {exc}")
    policy = retry_policy(args.timeout, args.retries)
    try:
        async with d:
            retransmitted = d.stats.retransmissions
            t0 = time.perf_counter()
            if command == "request":
                reply = await d.request(msg, where.addr, timeout=args.timeout, retry=policy)
                outcome = "reply"
            elif args.unreliable:
                await d.notify_unreliable(msg, where.addr)
                print(f"sent to {where} (unconfirmed)")
                return EXIT_OK
            else:
                await d.notify(msg, where.addr, timeout=args.timeout, retry=policy)
                outcome = "sent" if where.kind == "unix" else "ACK"
            took = time.perf_counter() - t0
            if args.verbose:
                attempts = d.stats.retransmissions - retransmitted + 1
                _report(command, outcome, where, attempts, took, d.rto(where.addr))
            if command == "request":
                print(json.dumps(fmt.to_json(reply)))
            else:
                how = "sent over a reliable socket" if where.kind == "unix" else "acknowledged"
                print(f"delivered to {where} ({how})")
    except MessageTooLarge as exc:
        raise UsageError(str(exc)) from None
    except RequestTimeout as exc:
        return fail(command, f"timed out: {exc}")
    except DispatchError as exc:
        return fail(command, str(exc))
    finally:
        if tmpdir is not None:
            shutil.rmtree(tmpdir, ignore_errors=True)
    return EXIT_OK


def _report(
    command: str, outcome: str, where: Where, attempts: int, took: float, rto: float
) -> None:
    sends = f"{attempts} attempt{'' if attempts == 1 else 's'}"
    print(f"aiodisp {command}: {outcome} from {where} after {sends} in {took * 1e3:.3f} ms "
          f"(retransmission timeout now {rto * 1e3:.0f} ms)", file=sys.stderr)
