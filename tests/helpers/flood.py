"""Helpers of the hostile-input tests: pacing and accounting floods, and the flooder.

* :func:`accounted` checks that every datagram a dispatcher read is in exactly
  one outcome counter (delivered, matched, or one drop counter).
* :func:`send_paced` sends datagrams from a bare socket in chunks the receiver
  can absorb, so the kernel drops none and counts can be exact.
* :func:`recv_datagram` reads a bare socket on any event loop (uvloop too).
* :func:`udp_drops` reads the kernel's per-socket drop count from
  ``/proc/net/udp`` (datagrams that never reached the dispatcher).
* Run as a script, this file is the flooder of ``tests/hostile/test_flood.py``::

      python tests/helpers/flood.py --target 127.0.0.1:PORT --count 100000 \\
          --keys 1000:2000 --seed 7 [--rate 20000]

  It prints ``{"ready": true}``, sends ``count`` hostile datagrams (see
  :func:`hostile_datagrams`) as fast as it can or at ``--rate`` per second,
  then prints one JSON line: ``{"sent": N, "kinds": {...}}``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import struct
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

#: Outcome counters of aiodisp.Stats: every received datagram lands in exactly one.
OUTCOMES = (
    "delivered",
    "replies_matched",
    "acks_received",
    "duplicates",
    "unknown_replies",
    "wrong_source",
    "unknown_acks",
    "header_errors",
    "decode_errors",
    "empty",
    "oversize",
    "queue_drops",
    "ignored",
    "unaccepted",
    "rejected",
)
DROPS = tuple(name for name in OUTCOMES if name not in ("delivered", "replies_matched",
                                                         "acks_received"))


def outcome_sum(stats: Any) -> int:
    return sum(getattr(stats, name) for name in OUTCOMES)


def accounted(stats: Any) -> bool:
    """True when the outcome counters add up to the datagrams received."""
    return bool(outcome_sum(stats) == stats.received)


async def settle(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Let the loop run until ``condition()`` holds; TimeoutError after ``timeout``."""
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.002)


async def send_paced(
    sock: socket.socket,
    datagrams: Iterable[bytes],
    dest: Any,
    received: Callable[[], int],
    *,
    chunk: int = 64,
) -> int:
    """Send ``datagrams`` to ``dest``, waiting after each ``chunk`` until ``received()``
    has grown by as many, so none overflows the receiver's socket buffer."""
    base = received()
    sent = 0
    for data in datagrams:
        sock.sendto(data, dest)
        sent += 1
        if sent % chunk == 0:

            def reached(n: int = sent) -> bool:
                return received() - base >= n

            await settle(reached)
    await settle(lambda: received() - base >= sent)
    return sent


def drain(sock: socket.socket) -> list[bytes]:
    """Every datagram waiting on a bare non-blocking socket now."""
    out = []
    while True:
        try:
            out.append(sock.recv(70_000))
        except BlockingIOError:
            return out


async def recv_datagram(sock: socket.socket, timeout: float = 5.0) -> tuple[bytes, Any]:
    """The next datagram on a bare non-blocking socket, and its sender.

    Polls instead of ``loop.sock_recvfrom``, which uvloop does not implement.
    """
    async with asyncio.timeout(timeout):
        while True:
            try:
                return sock.recvfrom(70_000)
            except BlockingIOError:
                await asyncio.sleep(0.001)


def udp_drops(sock: socket.socket) -> int:
    """Datagrams the kernel dropped for ``sock`` (its receive buffer was full)."""
    inode = os.fstat(sock.fileno()).st_ino
    table = "/proc/net/udp6" if sock.family == socket.AF_INET6 else "/proc/net/udp"
    with open(table) as f:
        next(f)
        for line in f:
            fields = line.split()
            if int(fields[9]) == inode:
                return int(fields[-1])
    raise LookupError(f"socket inode {inode} not in {table}")


# ---------------------------------------------------------------------- the flooder

#: Header flags of ACK framing (kept here so the flooder needs no import of aiodisp).
_ACK_REQUESTED = 0x01
_ACK = 0x02
_HEADER = struct.Struct(">Q")
_REPLY_BIT = 1 << 63


def _header(flags: int, packet_id: int) -> bytes:
    return _HEADER.pack((flags << 56) | (packet_id & ((1 << 56) - 1)))


def hostile_datagrams(
    rng: random.Random, count: int, keys: range, oversize: int
) -> Iterator[tuple[str, bytes]]:
    """``count`` hostile datagrams for an ACK-framed IdPrefixAdapter dispatcher, with kinds.

    Kinds: random garbage, empty, truncated headers, bad flags, ACKs for ids
    never sent, ACKs with a payload, forged replies with keys in ``keys`` (the
    victim's pending requests among them), bodies too short to decode, forged
    peer requests (the victim's application sees them), and datagrams longer
    than ``oversize`` bytes.
    """
    kinds = (
        "garbage", "empty", "truncated", "bad_flags", "unknown_ack", "ack_payload",
        "forged_reply", "forged_reply", "forged_reply", "short_body", "request", "oversize",
    )
    big = bytes(oversize + 1)
    for _ in range(count):
        kind = rng.choice(kinds)
        pid = rng.getrandbits(56)
        if kind == "garbage":
            data = rng.randbytes(rng.randrange(1, 200))
        elif kind == "empty":
            data = b""
        elif kind == "truncated":
            data = rng.randbytes(rng.randrange(1, 8))
        elif kind == "bad_flags":
            data = _header(rng.choice((0x03, 0x05, 0x80, 0xFF)), pid) + rng.randbytes(12)
        elif kind == "unknown_ack":
            data = _header(_ACK, pid)
        elif kind == "ack_payload":
            data = _header(_ACK, pid) + rng.randbytes(rng.randrange(1, 50))
        elif kind == "forged_reply":
            key = rng.choice(keys)
            data = _header(rng.choice((0, _ACK_REQUESTED)), pid) + _HEADER.pack(
                key | _REPLY_BIT) + b"forged"
        elif kind == "short_body":
            data = _header(0, pid) + rng.randbytes(rng.randrange(0, 8))
        elif kind == "request":
            data = _header(rng.choice((0, _ACK_REQUESTED)), pid) + _HEADER.pack(
                rng.getrandbits(62)) + rng.randbytes(rng.randrange(0, 64))
        else:
            data = big
        yield kind, data


def _flood(args: argparse.Namespace) -> None:
    host, _, port = args.target.rpartition(":")
    lo, _, hi = args.keys.partition(":")
    rng = random.Random(args.seed)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
    kinds: Counter[str] = Counter()
    sent = 0
    dest = (host, int(port))
    print(json.dumps({"ready": True}), flush=True)
    start = time.monotonic()
    stream = hostile_datagrams(rng, args.count, range(int(lo), int(hi)), args.oversize)
    for i, (kind, data) in enumerate(stream):
        if args.rate and i % 100 == 0:
            ahead = start + i / args.rate - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)
        try:
            sock.sendto(data, dest)
        except OSError:  # ENOBUFS under pressure: not sent, not counted
            continue
        sent += 1
        kinds[kind] += 1
    sock.close()
    print(json.dumps({"sent": sent, "kinds": dict(kinds)}), flush=True)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--target", required=True, help="HOST:PORT of the victim")
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--keys", default="0:1", help="LO:HI, keys forged replies carry")
    parser.add_argument("--oversize", type=int, default=1500,
                        help="the victim's max_datagram_size")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rate", type=float, default=0.0,
                        help="datagrams per second (0: as fast as possible)")
    _flood(parser.parse_args(argv))


if __name__ == "__main__":
    main(sys.argv[1:])
