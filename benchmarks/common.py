"""What every benchmark shares: the message, the closed-loop driver, loops, cores, CPU.

The message is an 8-byte big-endian word (bit 63: reply flag, bits 0-62: id)
and a 64-byte payload, exactly :class:`aiodisp.adapters.IdPrefixAdapter`'s
bytes; peers that have their own envelope (rpcudp, CoAP) carry those 72 bytes
as their payload.

The driver keeps ``in_flight`` workers busy, each awaiting one request at a
time, for a warm-up then a measured phase; it records per-request latency with
``time.perf_counter`` and the client process's CPU with ``time.process_time``.
The driver's own cost is the same for every peer.
"""

from __future__ import annotations

import asyncio
import os
import struct
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import asdict, dataclass, field
from typing import Any

PAYLOAD = 64
REPLY_BIT = 1 << 63
WORD = struct.Struct(">Q")
LOOPS = ("asyncio", "uvloop")

#: A request: ``await call(i, data)`` sends ``data`` (id ``i``) and returns the reply's bytes
#: as the peer hands them back (the 72 bytes, reply flag set), or raises on timeout.
Call = Callable[[int, bytes], Awaitable[Any]]


def message(i: int, body: bytes) -> bytes:
    return WORD.pack(i) + body


def check_reply(i: int, data: bytes, reply: bytes) -> bool:
    """A correct echo: same payload, id ``i`` with the reply flag."""
    return reply[8:] == data[8:] and WORD.unpack_from(reply)[0] == i | REPLY_BIT


@dataclass
class Measurement:
    """One client run: what the driver measured."""

    completed: int = 0
    errors: int = 0
    wrong: int = 0
    elapsed_s: float = 0.0
    cpu_s: float = 0.0
    requests_per_s: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    cpu_us_per_request: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


async def drive(
    call: Call,
    *,
    in_flight: int,
    duration: float,
    warmup: float,
    payload: int = PAYLOAD,
    check: Callable[[int, bytes, Any], bool] = check_reply,
) -> Measurement:
    """Keep ``in_flight`` requests going for ``warmup`` + ``duration`` seconds.

    ``extra["socket_drops"]`` counts the datagrams the kernel dropped on this
    process's UDP sockets during the measured phase (a full receive buffer).
    """
    body = os.urandom(payload)
    latencies: list[float] = []
    m = Measurement()
    state = {"measuring": False, "stop": False}
    next_id = 1
    clock = time.perf_counter

    async def worker() -> None:
        nonlocal next_id
        while not state["stop"]:
            i = next_id
            next_id += 1
            data = message(i, body)
            t0 = clock()
            try:
                reply = await call(i, data)
            except (TimeoutError, OSError, ConnectionError):
                if state["measuring"]:
                    m.errors += 1
                continue
            if state["measuring"]:
                latencies.append(clock() - t0)
                if not check(i, data, reply):
                    m.wrong += 1

    workers = [asyncio.ensure_future(worker()) for _ in range(in_flight)]
    try:
        await asyncio.sleep(warmup)
        drops0 = udp_drops()
        state["measuring"] = True
        cpu0, t0 = time.process_time(), clock()
        await asyncio.sleep(duration)
        m.elapsed_s = clock() - t0
        m.cpu_s = time.process_time() - cpu0
        m.extra["socket_drops"] = udp_drops() - drops0
        state["measuring"] = False
        state["stop"] = True
        await asyncio.wait(workers, timeout=10.0)
    finally:
        for w in workers:
            w.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
    latencies.sort()
    n = m.completed = len(latencies)
    if n:
        m.requests_per_s = n / m.elapsed_s
        m.p50_ms = latencies[n // 2] * 1e3
        m.p99_ms = latencies[min(n - 1, int(n * 0.99))] * 1e3
        m.cpu_us_per_request = m.cpu_s / n * 1e6
    return m


def run_on(loop: str, coro: Coroutine[Any, Any, Any]) -> Any:
    """Run ``coro`` on the default asyncio loop or on uvloop."""
    if loop == "uvloop":
        import uvloop

        return uvloop.run(coro)
    if loop != "asyncio":
        raise ValueError(f"unknown loop {loop!r}")
    return asyncio.run(coro)


def cores() -> list[int]:
    return sorted(os.sched_getaffinity(0))


def pin(cpu: int | None) -> None:
    """Pin this process to ``cpu`` (None: leave it)."""
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})


def renice(niceness: int | None) -> None:
    """Set this process's niceness (children inherit it); negative needs root.

    On a machine shared with other work, ``-20`` gives the benchmark's processes
    the CPU whenever they are runnable, which keeps the others' load out of the
    figures (their processes still run, at a far smaller share).
    """
    if niceness is not None:
        os.setpriority(os.PRIO_PROCESS, 0, niceness)


def exit_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit, so that ``finally`` blocks stop the servers."""
    import signal
    import sys

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))


def client_core() -> int | None:
    c = cores()
    return c[0] if len(c) >= 2 else None


def server_core() -> int | None:
    c = cores()
    return c[-1] if len(c) >= 2 else None


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) used so far by process ``pid`` (Linux /proc)."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        fields = f.read().rsplit(b")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _udp_table() -> dict[int, tuple[int, int]]:
    """Socket inode -> (local port, drops) of every IPv4/IPv6 UDP socket (Linux /proc)."""
    table: dict[int, tuple[int, int]] = {}
    for name in ("/proc/net/udp", "/proc/net/udp6"):
        try:
            with open(name) as f:
                lines = f.read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            table[int(cols[9])] = (int(cols[1].rsplit(":", 1)[1], 16), int(cols[-1]))
    return table


def my_udp_sockets() -> dict[int, int]:
    """File descriptor -> socket inode of this process's UDP sockets."""
    udp = _udp_table()
    fds: dict[int, int] = {}
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inode = int(target[8:-1])
            if inode in udp:
                fds[int(fd)] = inode
    return fds


def udp_drops() -> int:
    """Datagrams the kernel dropped (receive buffer full) on this process's UDP sockets."""
    udp = _udp_table()
    return sum(udp[inode][1] for inode in my_udp_sockets().values() if inode in udp)


def set_udp_buffers(size: int) -> None:
    """Give every UDP socket of this process ``size``-byte receive and send buffers.

    The kernel caps the size at net.core.rmem_max / wmem_max. Done alike for every
    peer (the harness finds the sockets through /proc, so no peer needs a hook).
    """
    import socket

    if size <= 0:
        return
    for fd in my_udp_sockets():
        s = socket.socket(fileno=os.dup(fd))
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)
        finally:
            s.close()


def percentile(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(len(s) * q))] if s else 0.0


def median(values: list[float]) -> float:
    s = sorted(values)
    n = len(s)
    if not n:
        return 0.0
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2
