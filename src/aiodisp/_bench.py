"""``aiodisp bench``: request/reply throughput and latency against an aiodisp echo server.

With no ``--target`` an echo server is started in a child process on loopback
(pinned to another core than the client when the machine has two); with
``--target HOST:PORT`` an existing echo server is measured (start one with
``aiodisp bench --serve HOST:PORT``). Messages are :class:`IdPrefixAdapter`
messages: an 8-byte id and a payload; the server answers each with the same id
and payload and the reply flag set.

``--loss P`` puts a lossy path under the client: each datagram it sends or
receives is dropped with probability P, and requests retransmit by a
:class:`RetryPolicy` (adaptive first wait, up to 10 attempts).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import random
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from ._core.framing import Framing
from ._dispatcher import Dispatcher
from ._open import open_udp
from ._transports.base import Address, DatagramSink
from ._transports.sockets import SocketTransport, make_udp_socket
from .adapters import IdMessage, IdPrefixAdapter
from .errors import DispatchError, RequestTimeout
from .retry import RetryPolicy

__all__ = ["add_parser", "run"]

#: Socket buffer bytes asked for by default: with the OS default (~200 KiB) replies
#: to a few hundred requests in flight overflow the receive buffer now and then.
SOCKBUF = 4 << 20

#: The retry policy of requests over a lossy path (``--loss``).
LOSSY_RETRY = RetryPolicy(initial_timeout=None, backoff=2.0, max_attempts=10, max_interval=0.5)


# ---------------------------------------------------------------------- the command line


def add_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register the ``bench`` subcommand (its handler is :func:`run`)."""
    p = subparsers.add_parser(
        "bench",
        help="measure requests/s and latency against an aiodisp echo server",
        description=(
            "Measure request/reply throughput, latency percentiles and client CPU per "
            "request over UDP. Without --target, an echo server runs in a child process "
            "on loopback."
        ),
    )
    where = p.add_mutually_exclusive_group()
    where.add_argument("--target", metavar="HOST:PORT", help="an aiodisp echo server to measure")
    where.add_argument(
        "--serve", metavar="HOST:PORT",
        help="only run an echo server at HOST:PORT until interrupted",
    )
    p.add_argument("--framing", choices=("ack", "raw"), default="ack", help="default: ack")
    p.add_argument("--in-flight", type=int, default=256, help="requests in flight (default 256)")
    p.add_argument(
        "--duration", type=float, default=5.0, help="seconds to measure (default 5; see --count)"
    )
    p.add_argument("--count", type=int, default=None, help="stop after this many requests")
    p.add_argument("--payload", type=int, default=64, help="payload bytes (default 64)")
    p.add_argument("--timeout", type=float, default=2.0, help="per-request timeout (default 2 s)")
    p.add_argument("--warmup", type=float, default=0.3, help="unmeasured seconds first")
    p.add_argument(
        "--loss", type=float, default=0.0, metavar="P",
        help="drop each datagram the client sends or receives with probability P",
    )
    p.add_argument("--seed", type=int, default=None, help="seed of the loss (default: random)")
    p.add_argument(
        "--sockbuf", type=int, default=SOCKBUF, metavar="BYTES",
        help="socket buffers of client and embedded server, capped by net.core.rmem_max "
             "(default 4 MiB: the default buffers overflow at a few hundred in flight; "
             "0: the OS default)",
    )
    p.add_argument("--uvloop", action="store_true", help="run on uvloop (client and server)")
    p.add_argument("--no-pin", action="store_true", help="do not pin client and server to cores")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run ``aiodisp bench``; return the exit status."""
    error = _check(args)
    if error:
        print(f"aiodisp bench: {error}", file=sys.stderr)
        return 2
    if args.uvloop and not _have_uvloop():
        print("aiodisp bench: --uvloop needs uvloop (pip install 'aiodisp[speed]')",
              file=sys.stderr)
        return 2
    if args.serve:
        host, port = parse_hostport(args.serve)

        def ready(addr: Address) -> None:
            where = f"[{addr[0]}]:{addr[1]}" if ":" in str(addr[0]) else f"{addr[0]}:{addr[1]}"
            print(f"echo server on udp://{where} ({args.framing} framing); Ctrl-C stops it",
                  file=sys.stderr, flush=True)

        serving = serve_echo((host, port), args.framing, ready=ready, sockbuf=args.sockbuf)
        with contextlib.suppress(KeyboardInterrupt):
            _run_loop(serving, args.uvloop)
        return 0
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    pin = not args.no_pin and len(cpus) >= 2
    server: EchoServerProcess | None = None
    try:
        if args.target:
            target: Address = parse_hostport(args.target)
        else:
            server = EchoServerProcess(
                args.framing, args.uvloop, cpu=cpus[-1] if pin else None, sockbuf=args.sockbuf
            )
            target = server.start()
        if pin:
            os.sched_setaffinity(0, {cpus[0]})
        result = _run_loop(measure(args, target), args.uvloop)
    except (DispatchError, OSError, RuntimeError) as exc:
        print(f"aiodisp bench: {exc}", file=sys.stderr)
        return 1
    finally:
        if server is not None:
            server.stop()
        if pin:
            os.sched_setaffinity(0, set(cpus))
    if args.json:
        print(json.dumps(asdict(result), indent=2))
    else:
        _print_table(result)
    return 0 if result.completed and not result.mismatched else 1


def _check(args: argparse.Namespace) -> str | None:
    if args.in_flight < 1:
        return "--in-flight must be at least 1"
    if args.count is not None and args.count < 1:
        return "--count must be at least 1"
    if not args.duration > 0:
        return "--duration must be positive"
    if not 0.0 <= args.loss < 1.0:
        return "--loss must be in [0, 1)"
    if args.payload < 0 or not args.timeout > 0 or args.warmup < 0 or args.sockbuf < 0:
        return "--payload, --timeout, --warmup and --sockbuf must not be negative"
    for name in ("target", "serve"):
        value = getattr(args, name)
        if value:
            try:
                parse_hostport(value)
            except ValueError as exc:
                return f"--{name}: {exc}"
    return None


def parse_hostport(text: str) -> tuple[str, int]:
    """``"host:port"`` or ``"[v6addr]:port"`` as ``(host, port)``."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{text!r} is not HOST:PORT")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)


def _have_uvloop() -> bool:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


def _run_loop(coro: Any, use_uvloop: bool) -> Any:
    if use_uvloop:
        import uvloop

        return uvloop.run(coro)
    return asyncio.run(coro)


# ---------------------------------------------------------------------- the echo server


async def serve_echo(
    addr: tuple[str, int],
    framing: Framing,
    *,
    ready: Callable[[Address], None] | None = None,
    stop: asyncio.Future[None] | None = None,
    reuse_port: bool = False,
    sockbuf: int = 0,
) -> None:
    """Answer every IdPrefixAdapter message with its id, its payload and the reply flag."""
    server = await open_udp(
        IdPrefixAdapter(), addr, framing=framing, reuse_port=reuse_port, max_queue=8192
    )
    set_buffers(server, sockbuf)
    try:
        if ready is not None:
            ready(server.local_addr)
        echo = asyncio.ensure_future(_echo(server))
        try:
            if stop is None:
                await echo
            else:
                await asyncio.wait([echo, stop], return_when=asyncio.FIRST_COMPLETED)
        finally:
            echo.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await echo
    finally:
        await server.close()


def set_buffers(d: Dispatcher[Any], size: int) -> None:
    """Ask for ``size``-byte socket buffers on ``d``'s socket (0: leave them)."""
    sock = getattr(d.transport, "socket", None)
    if size > 0 and isinstance(sock, socket.socket):
        for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, opt, size)


async def _echo(server: Dispatcher[IdMessage]) -> None:
    make_reply = IdPrefixAdapter().make_reply

    # A plain-function handler: serve() calls it as each request arrives (no task)
    # and sends what it returns.
    def echo(msg: IdMessage, _addr: Address) -> IdMessage:
        return make_reply(msg, msg.payload)

    await server.serve(echo)


def server_child_main() -> None:
    """The embedded echo server's child process: its arguments come as JSON on argv.

    It prints its address as one JSON line on stdout and stops when its stdin closes
    (so it never outlives the client, even if the client is killed).
    """
    opts = json.loads(sys.argv[1])
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if opts["cpu"] is not None:
        os.sched_setaffinity(0, {opts["cpu"]})

    def ready(addr: Address) -> None:
        sys.stdout.write(json.dumps(list(addr)) + "\n")
        sys.stdout.flush()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        stop: asyncio.Future[None] = loop.create_future()
        stdin = sys.stdin.fileno()

        def on_stdin() -> None:
            if not os.read(stdin, 4096) and not stop.done():
                stop.set_result(None)

        loop.add_reader(stdin, on_stdin)
        try:
            await serve_echo(
                tuple(opts["addr"]), opts["framing"], ready=ready, stop=stop,
                reuse_port=opts["reuse_port"], sockbuf=opts["sockbuf"],
            )
        finally:
            loop.remove_reader(stdin)

    _run_loop(main(), opts["uvloop"])


class EchoServerProcess:
    """An aiodisp echo server in a child process (pinned to ``cpu`` if given)."""

    def __init__(
        self, framing: str, use_uvloop: bool, *, cpu: int | None = None,
        addr: tuple[str, int] = ("127.0.0.1", 0), reuse_port: bool = False,
        sockbuf: int = SOCKBUF,
    ) -> None:
        self._opts = {
            "addr": list(addr), "framing": framing, "uvloop": use_uvloop, "cpu": cpu,
            "reuse_port": reuse_port, "sockbuf": sockbuf,
        }
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> Address:
        """Start the child; return the address it serves on."""
        env = dict(os.environ)
        here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [here, env.get("PYTHONPATH")]))
        code = "from aiodisp._bench import server_child_main; server_child_main()"
        self._proc = proc = subprocess.Popen(
            [sys.executable, "-c", code, json.dumps(self._opts)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env,
        )
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], timeout)
        line = proc.stdout.readline() if ready else b""
        if not line:
            self.stop()
            raise RuntimeError("the echo server process did not start")
        return tuple(json.loads(line))

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    def stop(self) -> None:
        """Close the child's stdin (it stops), wait for it, kill it if it lingers."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        assert proc.stdin is not None and proc.stdout is not None
        with contextlib.suppress(OSError):
            proc.stdin.close()
        try:
            proc.wait(5.0)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5.0)
        proc.stdout.close()


# ---------------------------------------------------------------------- the lossy path


class LossyTransport:
    """Wraps a transport; drops each datagram sent or received with probability ``loss``."""

    def __init__(self, inner: SocketTransport, loss: float, rng: random.Random) -> None:
        self._inner = inner
        self._loss = loss
        self._rng = rng
        self._sink: DatagramSink | None = None
        self.dropped_out = 0
        self.dropped_in = 0

    @property
    def local_addr(self) -> Address:
        return self._inner.local_addr

    @property
    def reliable(self) -> bool:
        return False

    @property
    def socket(self) -> socket.socket:
        return self._inner.socket

    @property
    def max_datagram_size(self) -> int:
        return self._inner.max_datagram_size

    def start(self, sink: DatagramSink) -> None:
        self._sink = sink
        self._inner.start(self)

    def datagram_received(self, data: bytes, addr: Address) -> None:
        if self._rng.random() < self._loss:
            self.dropped_in += 1
        elif self._sink is not None:
            self._sink.datagram_received(data, addr)

    def error_received(self, exc: Exception) -> None:
        if self._sink is not None:
            self._sink.error_received(exc)

    def send(self, data: bytes, addr: Address) -> bool:
        if self._rng.random() < self._loss:
            self.dropped_out += 1
            return False
        return self._inner.send(data, addr)

    async def wait_writable(self) -> None:
        await self._inner.wait_writable()

    async def resolve(self, addr: Address) -> Address:
        return await self._inner.resolve(addr)

    def close(self) -> None:
        self._inner.close()


# ---------------------------------------------------------------------- the client


@dataclass
class BenchResult:
    """What one ``aiodisp bench`` run measured (``--json`` prints it)."""

    target: str
    framing: str
    loop: str
    in_flight: int
    payload: int
    loss: float
    completed: int = 0
    timeouts: int = 0
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
    stats: dict[str, int] = field(default_factory=dict)


async def measure(args: argparse.Namespace, target: Address) -> BenchResult:
    """Run the client against ``target`` as ``args`` say."""
    adapter = IdPrefixAdapter()
    family = socket.AF_INET6 if ":" in str(target[0]) else socket.AF_INET
    bind = ("::", 0) if family == socket.AF_INET6 else ("0.0.0.0", 0)
    if target[0] in ("127.0.0.1", "localhost"):
        bind = ("127.0.0.1", 0)
    lossy: LossyTransport | None = None
    retry: RetryPolicy | None = None
    if args.loss:
        sock, limit = make_udp_socket(bind, family=family)
        lossy = LossyTransport(
            SocketTransport(sock, reliable=False, max_datagram_size=limit),
            args.loss,
            random.Random(args.seed),
        )
        retry = LOSSY_RETRY
        client: Dispatcher[IdMessage] = Dispatcher(lossy, adapter, framing=args.framing)
    else:
        client = await open_udp(adapter, bind, framing=args.framing)
    set_buffers(client, args.sockbuf)
    loop_name = type(asyncio.get_running_loop()).__module__.split(".")[0]
    result = BenchResult(
        target=f"{target[0]}:{target[1]}", framing=args.framing, loop=loop_name,
        in_flight=args.in_flight, payload=args.payload, loss=args.loss,
    )
    try:
        dest = await client.transport.resolve(target)
        body = os.urandom(args.payload)
        ids = itertools.count(1)
        latencies: list[float] = []
        run = _Run(args.count)
        clock = time.perf_counter

        async def worker() -> None:
            request = client.request
            while not run.stop:
                i = next(ids)
                t0 = clock()
                try:
                    reply = await request(IdMessage(i, body), dest, timeout=args.timeout,
                                          retry=retry)
                except RequestTimeout:
                    if run.measuring:
                        result.timeouts += 1
                    continue
                if run.measuring:
                    latencies.append(clock() - t0)
                    if reply.id != i or reply.payload != body:
                        result.mismatched += 1
                    run.done += 1
                    if run.done == run.limit:
                        run.finish()

        with _Progress(args, args.count) as progress:
            workers = [asyncio.ensure_future(worker()) for _ in range(args.in_flight)]
            try:
                await asyncio.sleep(args.warmup)
                before = client.stats
                run.begin()
                deadline = run.t0 + args.duration
                while not run.stop:
                    await asyncio.sleep(0.1)
                    now = clock()
                    progress.update(run.done, now - run.t0)
                    if run.limit is None and now >= deadline:
                        run.finish()
                await asyncio.wait_for(asyncio.gather(*workers), args.timeout * 12 + 5)
            finally:
                for w in workers:
                    w.cancel()
                await asyncio.gather(*workers, return_exceptions=True)
        after = client.stats
    finally:
        await client.close()
    latencies.sort()
    n = len(latencies)
    result.completed = n
    elapsed = run.elapsed
    result.elapsed_s = elapsed
    result.requests_per_s = n / elapsed if elapsed > 0 else 0.0
    if n:
        result.p50_ms = latencies[n // 2] * 1e3
        result.p90_ms = latencies[min(n - 1, int(n * 0.90))] * 1e3
        result.p99_ms = latencies[min(n - 1, int(n * 0.99))] * 1e3
        result.max_ms = latencies[-1] * 1e3
        result.cpu_us_per_request = run.cpu / n * 1e6
    result.retransmissions = after.retransmissions - before.retransmissions
    if lossy is not None:
        result.dropped_by_loss = lossy.dropped_in + lossy.dropped_out
    result.stats = after.as_dict()
    return result


class _Run:
    """The measured phase of a run: when it began and ended, and the CPU it took."""

    def __init__(self, limit: int | None) -> None:
        self.limit = limit
        self.measuring = False
        self.stop = False
        self.done = 0
        self.t0 = self.elapsed = 0.0
        self.cpu0 = self.cpu = 0.0

    def begin(self) -> None:
        self.measuring = True
        self.cpu0, self.t0 = time.process_time(), time.perf_counter()

    def finish(self) -> None:
        if self.measuring:
            self.elapsed = time.perf_counter() - self.t0
            self.cpu = time.process_time() - self.cpu0
        self.measuring = False
        self.stop = True


class _Progress:
    """A rich progress bar on stderr, or a plain line a second without rich."""

    def __init__(self, args: argparse.Namespace, count: int | None) -> None:
        self._count = count
        self._duration = args.duration
        self._quiet = args.json and not sys.stderr.isatty()
        self._bar: Any = None
        self._task: Any = None
        self._last_print = 0.0

    def __enter__(self) -> _Progress:
        if self._quiet:
            return self
        try:
            from rich.console import Console
            from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
        except ImportError:
            return self
        self._bar = Progress(
            TextColumn("[bold]aiodisp bench"),
            BarColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            auto_refresh=False,
            transient=True,
        )
        self._bar.__enter__()
        total = self._count if self._count is not None else self._duration
        self._task = self._bar.add_task("bench", total=total, rate="")
        return self

    def update(self, done: int, elapsed: float) -> None:
        rate = f"{done / elapsed:,.0f} req/s" if elapsed > 0 else ""
        if self._bar is not None:
            completed = done if self._count is not None else min(elapsed, self._duration)
            self._bar.update(self._task, completed=completed, rate=rate)
            self._bar.refresh()
        elif not self._quiet and elapsed - self._last_print >= 1.0:
            self._last_print = elapsed
            print(f"aiodisp bench: {done} requests in {elapsed:.1f} s, {rate}", file=sys.stderr)

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.__exit__(None, None, None)


def _rows(result: BenchResult) -> list[tuple[str, str]]:
    rows = [
        ("target", f"udp://{result.target} ({result.framing} framing, {result.loop})"),
        ("in flight / payload", f"{result.in_flight} / {result.payload} bytes"),
        ("completed", f"{result.completed:,} in {result.elapsed_s:.2f} s"),
        ("requests/s", f"{result.requests_per_s:,.0f}"),
        ("latency p50 / p90 / p99 / max",
         f"{result.p50_ms:.3f} / {result.p90_ms:.3f} / {result.p99_ms:.3f} / "
         f"{result.max_ms:.3f} ms"),
        ("client CPU per request", f"{result.cpu_us_per_request:.1f} µs"),
        ("timeouts", f"{result.timeouts:,}"),
    ]
    if result.loss:
        rows.append(("loss / dropped / retransmissions",
                     f"{result.loss:g} / {result.dropped_by_loss:,} / {result.retransmissions:,}"))
    if result.mismatched:
        rows.append(("WRONG REPLIES", f"{result.mismatched:,}"))
    return rows


def _print_table(result: BenchResult) -> None:
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        for name, value in _rows(result):
            print(f"{name:>32}  {value}")
        return
    table = Table(title="aiodisp bench", show_header=False)
    table.add_column(justify="right", style="bold")
    table.add_column()
    for name, value in _rows(result):
        table.add_row(name, value)
    Console().print(table)
