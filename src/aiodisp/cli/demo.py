"""``aiodisp demo`` (``make demo``): an echo server and a client on loopback UDP, one process."""

from __future__ import annotations

import argparse
import asyncio
import time

import aiodisp
from aiodisp import Dispatcher
from aiodisp.adapters import IdMessage, IdPrefixAdapter

from . import loop
from .args import EXIT_OK, count_arg

__all__ = ["add_parser", "run", "run_demo"]


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``demo``."""
    p = sub.add_parser("demo", help="run an echo server and a client on loopback UDP")
    p.add_argument("--count", type=count_arg(1), default=20_000, help="requests to make")
    p.add_argument("--in-flight", type=count_arg(1), default=64,
                   help="requests in flight at once")


def run(args: argparse.Namespace) -> int:
    """Run ``aiodisp demo``; return the exit status."""
    loop.run(lambda: run_demo(args.count, args.in_flight))
    return EXIT_OK


async def _echo(server: Dispatcher[IdMessage]) -> None:
    async for msg, _size, addr in server:
        if not msg.payload.startswith(b"note:"):  # notifications get no reply
            await server.notify_unreliable(msg._replace(reply=True), addr)


async def run_demo(count: int = 20_000, in_flight: int = 64, payload: int = 64) -> dict[str, float]:
    """Start an echo server and a client on loopback UDP; do ``count`` requests."""
    adapter = IdPrefixAdapter()
    server = await aiodisp.open_udp(adapter, ("127.0.0.1", 0))
    client = await aiodisp.open_udp(adapter, ("127.0.0.1", 0))
    serving = asyncio.create_task(_echo(server))
    try:
        print(f"echo server on udp://{server.local_addr[0]}:{server.local_addr[1]} (ACK framing)",
              flush=True)
        first = await client.request(IdMessage(1, b"hello"), server.local_addr, timeout=2.0)
        print(f"request id=1 payload=b'hello' -> reply id={first.id} payload={first.payload!r}",
              flush=True)
        await client.notify(IdMessage(2, b"note: a reliable notification"), server.local_addr)
        print("notify id=2 -> ACKed by the server's dispatcher", flush=True)

        body = b"x" * payload
        ids = iter(range(10, 10 + count))
        latencies: list[float] = []

        async def worker() -> None:
            for i in ids:
                t0 = time.perf_counter()
                reply = await client.request(IdMessage(i, body), server.local_addr, timeout=2.0)
                latencies.append(time.perf_counter() - t0)
                assert reply.id == i and reply.payload == body

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(in_flight)))
        elapsed = time.perf_counter() - t0
        latencies.sort()
        rate = count / elapsed
        p50 = latencies[len(latencies) // 2] * 1e3
        p99 = latencies[int(len(latencies) * 0.99)] * 1e3
        print(
            f"{count} requests, {in_flight} in flight, {payload}-byte payloads: "
            f"{rate:,.0f} requests/s, p50 {p50:.2f} ms, p99 {p99:.2f} ms "
            "(client and server share one process and one core)"
        )
        stats = client.stats
        print(
            f"client stats: sent={stats.sent} received={stats.received} "
            f"matched={stats.replies_matched} timeouts={stats.timeouts}"
        )
        return {"requests_per_s": rate, "p50_ms": p50, "p99_ms": p99}
    finally:
        await client.close()
        await server.close()
        await serving
