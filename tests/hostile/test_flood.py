"""A flood from another process while legitimate requests run, over real loopback UDP.

A second process (``tests/helpers/flood.py``) sends 100,000 hostile datagrams
(garbage, truncated headers, bad flags, unknown ACKs, forged replies with the
keys of the victim's pending requests, forged peer requests, oversize) as fast
as it can, while the victim keeps making requests to an honest echo server.
Then:

* every legitimate request completes, with its own reply (retransmitted by a
  RetryPolicy: the kernel drops datagrams when the victim's socket is full);
* every datagram is accounted for: those the kernel dropped (``/proc/net/udp``)
  plus those the victim read equal those sent to it, and each one read is in
  exactly one outcome counter;
* the victim's process allocates less than ``MEMORY_BOUND`` more at its peak
  than before the flood (tracemalloc).
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import json
import os
import sys
import time
import tracemalloc
from pathlib import Path

import pytest

import aiodisp
from aiodisp.adapters import IdMessage, IdPrefixAdapter
from tests.helpers.flood import DROPS, accounted, settle, udp_drops

FLOOD = 100_000
RATE = 20_000  # datagrams per second: about as fast as the victim reads, on this machine
MEMORY_BOUND = 20 * 2**20  # bytes of peak growth allowed in the victim's process
MAX_DATAGRAM = 1500  # the victim's limit; the flooder sends some datagrams past it
KEY_BASE = 1 << 40
WORKERS = 8
LANE = 250  # worker w cycles through keys KEY_BASE + w * LANE + (0 .. LANE-1)
KEYS = WORKERS * LANE  # forged replies carry keys in KEY_BASE .. KEY_BASE + KEYS - 1
MIN_REQUESTS = 300
FLOODER = Path(__file__).parent.parent / "helpers" / "flood.py"
RETRY = aiodisp.RetryPolicy(initial_timeout=0.05, backoff=1.5, max_interval=0.5,
                            max_attempts=None)

pytestmark = pytest.mark.skipif(
    not os.path.exists("/proc/net/udp"), reason="needs Linux /proc/net/udp for drop counts"
)


async def test_flood_from_another_process_is_absorbed_while_requests_complete() -> None:
    tracemalloc.start()
    try:
        await _flood_scenario()
    finally:
        tracemalloc.stop()


async def _flood_scenario() -> None:
    adapter = IdPrefixAdapter()
    victim = await aiodisp.open_udp(adapter, ("127.0.0.1", 0), max_datagram_size=MAX_DATAGRAM)
    server = await aiodisp.open_udp(adapter, ("127.0.0.1", 0))

    async def serve() -> None:
        async for msg, _, addr in server:
            await server.notify_unreliable(msg._replace(reply=True), addr)

    forged_requests = 0

    async def victim_app() -> None:  # the victim's application reads what it is sent
        nonlocal forged_requests
        async for _ in victim:
            forged_requests += 1

    tasks = [asyncio.create_task(serve()), asyncio.create_task(victim_app())]
    flooder: asyncio.subprocess.Process | None = None
    try:
        # Warm up (first-use allocations), then take the baseline.
        for i in range(20):
            await victim.request(IdMessage(i, b"warm"), server.local_addr, timeout=5)
        gc.collect()
        baseline = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()

        host, port = victim.local_addr
        flooder = await asyncio.create_subprocess_exec(
            sys.executable, str(FLOODER), "--target", f"{host}:{port}", "--count", str(FLOOD),
            "--keys", f"{KEY_BASE}:{KEY_BASE + KEYS}", "--oversize", str(MAX_DATAGRAM),
            "--seed", "4", "--rate", str(RATE), stdout=asyncio.subprocess.PIPE,
        )
        assert flooder.stdout is not None
        assert json.loads(await asyncio.wait_for(flooder.stdout.readline(), 30)) == {
            "ready": True}
        flood_over = asyncio.Event()
        done_during_flood = 0
        completed = 0  # checked one by one, not kept: the test's own memory is traced too
        wrong: list[tuple[IdMessage, IdMessage]] = []

        async def worker(w: int) -> None:
            nonlocal done_during_flood, completed
            lane = itertools.cycle(range(KEY_BASE + w * LANE, KEY_BASE + (w + 1) * LANE))
            while not flood_over.is_set() or completed < MIN_REQUESTS:
                msg = IdMessage(next(lane), os.urandom(12))
                reply = await victim.request(msg, server.local_addr, timeout=60, retry=RETRY)
                completed += 1
                if reply != msg._replace(reply=True):
                    wrong.append((msg, reply))
                if not flood_over.is_set():
                    done_during_flood += 1

        started = time.monotonic()
        workers = [asyncio.create_task(worker(w)) for w in range(WORKERS)]
        line = await asyncio.wait_for(flooder.stdout.readline(), 120)
        flood_over.set()
        report = json.loads(line)
        assert await flooder.wait() == 0
        flood_seconds = time.monotonic() - started
        await asyncio.gather(*workers)

        # All legitimate requests completed with their own reply.
        assert completed >= MIN_REQUESTS and done_during_flood > 0
        assert wrong == []  # every request got its own reply
        assert victim.pending == 0

        # Every datagram sent to the victim is accounted for.
        sock = victim.transport.socket  # type: ignore[attr-defined]
        expected = report["sent"] + server.stats.sent
        await settle(lambda: victim.stats.received + udp_drops(sock) == expected, 30)
        s = victim.stats
        kernel_drops = udp_drops(sock)
        assert accounted(s)
        assert s.received + kernel_drops == expected
        peak = tracemalloc.get_traced_memory()[1] - baseline

        # The flood reached every drop counter it aims at.
        for counter in ("wrong_source", "unknown_replies", "unknown_acks", "header_errors",
                        "decode_errors", "empty", "oversize"):
            assert getattr(s, counter) > 0, counter
        # Forged peer requests are messages like any other: the application gets them.
        assert s.delivered > 0 and s.consumed + victim.queued == s.delivered

        print(
            f"\nflood: {report['sent']} hostile datagrams in {flood_seconds:.1f} s; "
            f"victim read {s.received}, kernel dropped {kernel_drops}; "
            f"{completed} requests ({done_during_flood} during the flood), "
            f"{s.retransmissions} retransmissions; peak memory growth {peak / 2**20:.1f} MiB; "
            + ", ".join(f"{name}={getattr(s, name)}" for name in DROPS)
        )
        assert peak < MEMORY_BOUND
    finally:
        if flooder is not None and flooder.returncode is None:
            flooder.kill()
            await flooder.wait()
        await victim.close()
        await server.close()
        await asyncio.gather(*tasks)
