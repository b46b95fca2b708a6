"""Serving under a real load generator: dnsperf against DNS responders in Python.

    .venv/bin/python benchmarks/dnsperf_serving.py                  # ~2 min, JSON in results/
    .venv/bin/python benchmarks/dnsperf_serving.py --quick --json -  # seconds-long smoke

The responders answer with the same function (:func:`dns_zone.answer`); they
differ only in how a datagram reaches it and how the reply leaves:

* ``aiodisp``: ``Dispatcher.serve()`` with a plain-function handler, raw framing,
  an adapter whose messages are the datagrams' bytes (``msg_key``: the DNS id,
  ``is_reply``: the QR bit), as a user writes it (served by the inline server's
  direct receiver, ``aiodisp._serve``: four adapter calls and the handler's
  frame per query that the hand-rolled responders do not make);
* ``reader``: hand-rolled, ``loop.add_reader`` on a non-blocking socket, draining
  every queued datagram per wake-up (``recvfrom`` / ``sendto``);
* ``protocol``: hand-rolled, an ``asyncio.DatagramProtocol`` (uvloop only by
  default: on the default loop it reads one datagram per loop iteration and is
  far behind ``reader``).

Each responder runs in its own process pinned to one core (the last), dnsperf
(Debian's ``dnsperf``) pinned to the other with ``taskset``, for ``--duration``
seconds per run over a generated query file (70 % A, 20 % AAAA, 10 % names that
do not exist). Runs alternate between the responders (the order reversed every
other round), so drift on a shared machine hits them alike; the ratio
aiodisp / hand-rolled is taken per round, against the faster hand-rolled
responder of that round on that loop, and reported as the median and the range
over rounds. So is the ratio of the responders' CPU per query (the cheapest
hand-rolled one's over aiodisp's): on a machine shared with other work a
process does not always get its core, and then queries/s moves more than the
CPU each query costs. Every socket has 4 MiB kernel buffers (aiodisp's default).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import common  # noqa: E402
import dns_zone  # noqa: E402
import harness  # noqa: E402

RESPONDERS = ("aiodisp", "reader", "protocol")
DEFAULT_RESPONDERS = {"asyncio": ("aiodisp", "reader"), "uvloop": ("aiodisp", "reader", "protocol")}
BUFFER = 4 << 20
answer = dns_zone.answer


# ---------------------------------------------------------------------- the responders


class DnsWire:
    """A MessageAdapter whose messages are DNS datagrams as bytes."""

    def msg_to_raw(self, msg: bytes) -> bytes:
        return msg

    def raw_to_msg(self, raw: bytes) -> bytes:
        return raw

    def msg_key(self, msg: bytes) -> bytes:
        return msg[:2]  # the DNS id

    def is_reply(self, msg: bytes) -> bool:
        return msg[2] >= 0x80  # QR


def handle(msg: bytes, addr: Any) -> bytes | None:
    """The aiodisp handler: a plain function, called inline by serve()."""
    return answer(msg)


async def serve_aiodisp(ready: Callable[[Any], None], stop: asyncio.Future[None]) -> None:
    import aiodisp

    d = await aiodisp.open_udp(DnsWire(), ("127.0.0.1", 0), framing="raw", buffer_size=BUFFER)
    serving = asyncio.ensure_future(d.serve(handle))
    try:
        ready(d.local_addr)
        await asyncio.wait([serving, stop], return_when=asyncio.FIRST_COMPLETED)
    finally:
        await d.close()
        await serving


def _socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, BUFFER)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, BUFFER)
    sock.bind(("127.0.0.1", 0))
    return sock


async def serve_reader(ready: Callable[[Any], None], stop: asyncio.Future[None]) -> None:
    loop = asyncio.get_running_loop()
    sock = _socket()
    recvfrom = sock.recvfrom
    sendto = sock.sendto

    def drain() -> None:
        while True:
            try:
                data, peer = recvfrom(4096)
            except (BlockingIOError, InterruptedError):
                return
            reply = answer(data)
            if reply is not None:
                try:
                    sendto(reply, peer)
                except BlockingIOError:
                    pass  # dnsperf counts it lost, as a full buffer would

    loop.add_reader(sock.fileno(), drain)
    try:
        ready(sock.getsockname())
        await stop
    finally:
        loop.remove_reader(sock.fileno())
        sock.close()


class _Responder(asyncio.DatagramProtocol):
    def connection_made(self, transport: Any) -> None:
        self.sendto = transport.sendto

    def datagram_received(self, data: bytes, addr: Any) -> None:
        reply = answer(data)
        if reply is not None:
            self.sendto(reply, addr)


async def serve_protocol(ready: Callable[[Any], None], stop: asyncio.Future[None]) -> None:
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(_Responder, sock=_socket())
    try:
        ready(transport.get_extra_info("sockname"))
        await stop
    finally:
        transport.close()


SERVE = {"aiodisp": serve_aiodisp, "reader": serve_reader, "protocol": serve_protocol}


async def _server_main(opts: dict[str, Any]) -> None:
    loop = asyncio.get_running_loop()
    stop: asyncio.Future[None] = loop.create_future()
    stdin = sys.stdin.fileno()

    def on_stdin() -> None:
        if not os.read(stdin, 4096) and not stop.done():
            stop.set_result(None)

    def ready(addr: Any) -> None:
        sys.stdout.write(json.dumps(list(addr)[:2]) + "\n")
        sys.stdout.flush()

    loop.add_reader(stdin, on_stdin)
    try:
        await SERVE[opts["responder"]](ready, stop)
    finally:
        loop.remove_reader(stdin)


class Responder(harness.Server):
    """A responder process that lives across rounds (stops when its stdin closes)."""

    def __init__(self, responder: str, loop: str, cpu: int | None) -> None:
        self.opts = {"responder": responder, "loop": loop, "cpu": cpu}
        self.proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--serve", json.dumps(self.opts)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=harness._env(),
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            self.close()
            raise RuntimeError(f"responder {self.opts} did not start")
        self.addr = tuple(json.loads(line))


# ---------------------------------------------------------------------- dnsperf

_FIELDS = {
    "sent": r"Queries sent:\s+(\d+)",
    "completed": r"Queries completed:\s+(\d+)",
    "lost": r"Queries lost:\s+(\d+)",
    "qps": r"Queries per second:\s+([\d.]+)",
    "latency_avg_s": r"Average Latency \(s\):\s+([\d.]+)",
    "latency_std_s": r"Latency StdDev \(s\):\s+([\d.]+)",
    "run_s": r"Run time \(s\):\s+([\d.]+)",
}


def dnsperf(addr: tuple[str, int], datafile: str, seconds: float, args: argparse.Namespace,
            cpu: int | None, limit: list[str] | None = None) -> dict[str, Any]:
    """One dnsperf run against ``addr``: its summary figures and rcodes.

    ``limit`` replaces the time limit (``-l seconds``) with other dnsperf options.
    """
    argv = ["dnsperf", "-s", addr[0], "-p", str(addr[1]), "-d", datafile,
            *(limit or ["-l", f"{seconds:g}"]), "-c", str(args.clients),
            "-q", str(args.outstanding), "-t", str(args.timeout), "-b", str(args.buffer_kib)]
    if cpu is not None:
        argv = ["taskset", "-c", str(cpu), *argv]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = proc.communicate(timeout=seconds + args.timeout + 300)
    if proc.returncode != 0:
        raise RuntimeError(f"dnsperf failed ({proc.returncode}): {err[-2000:]}")
    result: dict[str, Any] = {}
    for key, pattern in _FIELDS.items():
        match = re.search(pattern, out)
        if match is None:
            raise RuntimeError(f"dnsperf printed no {key!r}:\n{out}")
        result[key] = float(match.group(1))
    codes = re.search(r"Response codes:\s+(.*)", out)
    result["rcodes"] = {k: int(v) for k, v in re.findall(r"([A-Z]+) (\d+) \(",
                                                          codes.group(1) if codes else "")}
    result["loss"] = result["lost"] / result["sent"] if result["sent"] else 0.0
    return result


def instructions(responder: str, loop: str, datafile: str, args: argparse.Namespace) -> dict[
        str, Any]:
    """User-space instructions per query of ``responder`` under callgrind.

    The responder runs under ``valgrind --tool=callgrind`` twice, answering
    dnsperf's query file once (``-n 1``) and three times (``-n 3``), paced
    (``-Q``) if asked, else unpaced: the responder is saturated, with
    ``--outstanding`` queries waiting in its socket, as in the timed runs; the difference
    of the two counts over the difference of the queries answered is what one
    query costs, start-up and shutdown cancelled out.
    """
    counts = []
    # (CALLGRIND_OUT, e.g. /tmp/cg.%p: keep each run's profile for callgrind_annotate)
    out = os.environ.get("CALLGRIND_OUT", "/dev/null")
    for passes in (1, 3):
        opts = {"responder": responder, "loop": loop, "cpu": None}
        proc = subprocess.Popen(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable,
             os.path.abspath(__file__), "--serve", json.dumps(opts)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env=harness._env())
        assert proc.stdin is not None and proc.stdout is not None
        try:
            addr = tuple(json.loads(proc.stdout.readline()))
            pace = ["-Q", str(args.callgrind_qps)] if args.callgrind_qps else []
            result = dnsperf(addr, datafile, 0, args, None, ["-n", str(passes), *pace])
        finally:
            proc.stdin.close()
            proc.stdin = None
            _, err = proc.communicate(timeout=300)
        match = re.search(r"refs:\s+([\d,]+)", err)
        if match is None:
            raise RuntimeError(f"callgrind printed no count:\n{err[-2000:]}")
        counts.append((int(match.group(1).replace(",", "")), result["completed"], result["lost"]))
    (small, n_small, lost_small), (large, n_large, lost_large) = counts
    return {"loop": loop, "responder": responder,
            "instructions_per_query": (large - small) / max(1.0, n_large - n_small),
            "queries": n_large - n_small, "lost": lost_small + lost_large}


def _count_syscalls(pid: int, datafile: str) -> subprocess.Popen[bytes]:
    """perf stat counting the system calls of ``pid`` until it is sent SIGINT."""
    import syscalls

    proc = subprocess.Popen(syscalls._perf_argv(pid, datafile + ".perf", None),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.3)  # attached
    return proc


def _syscalls_per_query(tracer: subprocess.Popen[bytes], datafile: str,
                        queries: float) -> dict[str, float]:
    import signal

    import syscalls

    tracer.send_signal(signal.SIGINT)
    tracer.wait(30)
    counts, _ = syscalls._parse_perf(datafile + ".perf")
    os.unlink(datafile + ".perf")
    return {k: v / max(1.0, queries) for k, v in sorted(counts.items())}


def _children_cpu() -> float:
    r = os.times()
    return r.children_user + r.children_system


# ---------------------------------------------------------------------- the run


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="seconds-long smoke: 1 s runs, 1 round")
    p.add_argument("--duration", type=float, default=None, help="seconds per dnsperf run (5)")
    p.add_argument("--warmup", type=float, default=None,
                   help="an unmeasured dnsperf run per responder first, seconds (1)")
    p.add_argument("--rounds", type=int, default=None, help="alternating rounds (3)")
    p.add_argument("--loops", default="asyncio,uvloop", help="asyncio,uvloop")
    p.add_argument("--responders", default=None,
                   help="comma list of aiodisp,reader,protocol (default: aiodisp,reader on "
                        "the default loop; aiodisp,reader,protocol on uvloop)")
    p.add_argument("--clients", type=int, default=4, help="dnsperf -c: its sockets (4)")
    p.add_argument("--outstanding", type=int, default=512,
                   help="dnsperf -q: queries in flight (512)")
    p.add_argument("--timeout", type=float, default=1.0, help="dnsperf -t: seconds (1)")
    p.add_argument("--buffer-kib", type=int, default=BUFFER >> 10,
                   help="dnsperf -b: its sockets' buffers in KiB (4096, as the responders')")
    p.add_argument("--queries", type=int, default=10_000, help="lines of the query file")
    p.add_argument("--no-pin", action="store_true", help="do not pin to cores")
    p.add_argument("--callgrind", action="store_true",
                   help="instead of timing: user-space instructions per query of each "
                        "responder under callgrind (needs valgrind; ~1 min per responder)")
    p.add_argument("--callgrind-qps", type=int, default=0,
                   help="dnsperf -Q under callgrind (default 0: unpaced, the responder saturated "
                        "with --outstanding queries waiting, as in the timed runs)")
    p.add_argument("--syscalls", action="store_true",
                   help="count each responder's system calls per query with perf stat")
    p.add_argument("--renice", type=int, default=None, metavar="N",
                   help="run at niceness N (-20 as root: first claim on the CPU)")
    p.add_argument("--json", metavar="PATH", default=None,
                   help="write the results ('-': stdout; default "
                        "benchmarks/results/YYYY-MM-DD-<sha>-dnsperf.json, none with --quick)")
    p.add_argument("--serve", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.duration = args.duration or (1.0 if args.quick else 5.0)
    args.warmup = args.warmup if args.warmup is not None else (0.3 if args.quick else 1.0)
    args.rounds = args.rounds or (1 if args.quick else 3)
    args.loops = [x for x in args.loops.split(",") if x]
    for loop in args.loops:
        if loop not in common.LOOPS:
            p.error(f"unknown loop {loop!r}")
    if args.responders:
        chosen = [x for x in args.responders.split(",") if x]
        for r in chosen:
            if r not in RESPONDERS:
                p.error(f"unknown responder {r!r}")
        args.plan = {loop: tuple(chosen) for loop in args.loops}
    else:
        args.plan = {loop: DEFAULT_RESPONDERS[loop] for loop in args.loops}
    return args


def default_json_path() -> str:
    sha = harness.source_version()["commit"] or "nogit"
    return os.path.join(HERE, "results", f"{time.strftime('%Y-%m-%d')}-{sha}-dnsperf.json")


def summarize(runs: dict[tuple[str, str], list[dict[str, Any]]],
              plan: dict[str, tuple[str, ...]]) -> dict[str, Any]:
    rows = []
    for (loop, responder), results in runs.items():
        qps = [r["qps"] for r in results]
        rows.append({
            "loop": loop, "responder": responder, "rounds": len(results),
            "qps_median": common.median(qps), "qps_min": min(qps), "qps_max": max(qps),
            "loss_max": max(r["loss"] for r in results),
            "lost_total": sum(r["lost"] for r in results),
            "server_cpu_us_per_query": common.median(
                [r["server_cpu_us_per_query"] for r in results]),
            "dnsperf_cpu_share": common.median([r["dnsperf_cpu_share"] for r in results]),
            "latency_avg_ms": common.median([r["latency_avg_s"] * 1e3 for r in results]),
            "syscalls_per_query": {
                k: common.median([r["syscalls_per_query"].get(k, 0.0) for r in results])
                for k in results[0].get("syscalls_per_query", {})},
            "per_round": results,
        })
    ratios = []
    for loop, responders in plan.items():
        refs = [r for r in responders if r != "aiodisp"]
        if "aiodisp" not in responders or not refs:
            continue
        n = len(runs[(loop, "aiodisp")])
        per_round = []
        for i in range(n):
            best = max(refs, key=lambda r: runs[(loop, r)][i]["qps"])
            ours = runs[(loop, "aiodisp")][i]["server_cpu_us_per_query"]
            cheapest = min(runs[(loop, r)][i]["server_cpu_us_per_query"] for r in refs)
            per_round.append({
                "ratio": runs[(loop, "aiodisp")][i]["qps"] / runs[(loop, best)][i]["qps"],
                "against": best,
                "cpu_ratio": cheapest / ours,
                **{f"vs_{r}": runs[(loop, "aiodisp")][i]["qps"] / runs[(loop, r)][i]["qps"]
                   for r in refs},
            })
        values = [x["ratio"] for x in per_round]
        cpu = [x["cpu_ratio"] for x in per_round]
        ratios.append({
            "loop": loop, "ratio_median": common.median(values),
            "ratio_min": min(values), "ratio_max": max(values),
            "cpu_ratio_median": common.median(cpu), "cpu_ratio_min": min(cpu),
            "cpu_ratio_max": max(cpu),
            "required": 0.9, "met": common.median(values) >= 0.9, "per_round": per_round,
        })
    return {"rows": rows, "ratios": ratios}


def print_table(summary: dict[str, Any], file: Any) -> None:
    print("\n| loop | responder | queries/s (median) | range | server CPU µs/query "
          "| dnsperf CPU | lost (max share) |", file=file)
    print("|---|---|---:|---:|---:|---:|---:|", file=file)
    for r in summary["rows"]:
        print(f"| {r['loop']} | {r['responder']} | {r['qps_median']:,.0f} "
              f"| {r['qps_min']:,.0f}-{r['qps_max']:,.0f} | {r['server_cpu_us_per_query']:.1f} "
              f"| {r['dnsperf_cpu_share']:.0%} | {r['lost_total']:.0f} ({r['loss_max']:.3%}) |",
              file=file)
    if any(r["syscalls_per_query"] for r in summary["rows"]):
        print("\n| loop | responder | system calls per query | receives | of which EAGAIN "
              "| sends | epoll waits |", file=file)
        print("|---|---|---:|---:|---:|---:|---:|", file=file)
        for r in summary["rows"]:
            c = r["syscalls_per_query"]
            print(f"| {r['loop']} | {r['responder']} | {c.get('total', 0):.2f} | "
                  f"{c.get('recvfrom', 0) + c.get('recvmsg', 0):.2f} | "
                  f"{c.get('recvfrom EAGAIN', 0) + c.get('recvmsg EAGAIN', 0):.2f} | "
                  f"{c.get('sendto', 0) + c.get('sendmsg', 0):.2f} | "
                  f"{c.get('epoll_wait', 0) + c.get('epoll_pwait', 0):.2f} |", file=file)
    print("\n| loop | aiodisp / hand-rolled queries/s (median, range) | against "
          "| hand-rolled / aiodisp server CPU per query (median, range) | required | met |",
          file=file)
    print("|---|---:|---|---:|---:|---|", file=file)
    for r in summary["ratios"]:
        against = ",".join(sorted({x["against"] for x in r["per_round"]}))
        print(f"| {r['loop']} | {r['ratio_median']:.2f}x ({r['ratio_min']:.2f}-"
              f"{r['ratio_max']:.2f}) | {against} | {r['cpu_ratio_median']:.2f}x "
              f"({r['cpu_ratio_min']:.2f}-{r['cpu_ratio_max']:.2f}) | ≥ {r['required']}x "
              f"| {'yes' if r['met'] else 'no'} |", file=file)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.serve:
        opts = json.loads(args.serve)
        common.pin(opts.get("cpu"))
        common.run_on(opts["loop"], _server_main(opts))
        return 0
    if shutil.which("dnsperf") is None:
        print("needs dnsperf (apt-get install dnsperf)", file=sys.stderr)
        return 2
    common.renice(args.renice)
    common.exit_on_sigterm()
    server_cpu = None if args.no_pin else common.server_core()
    client_cpu = None if args.no_pin else common.client_core()
    cases = [(loop, r) for loop in args.loops for r in args.plan[loop]]
    log = sys.stderr
    print(f"{len(cases)} responders x {args.rounds} rounds x {args.duration:g} s; load average "
          f"before: {os.getloadavg()[0]:.2f}", file=log)
    started = time.time()
    runs: dict[tuple[str, str], list[dict[str, Any]]] = {c: [] for c in cases}
    servers: dict[tuple[str, str], Responder] = {}
    with tempfile.NamedTemporaryFile("w", suffix=".dnsperf", delete=False) as f:
        f.write("\n".join(dns_zone.query_file_lines(args.queries)) + "\n")
        datafile = f.name
    if args.callgrind:
        try:
            return _callgrind_main(args, cases, datafile, argv)
        finally:
            os.unlink(datafile)
    try:
        for case in cases:
            servers[case] = server = Responder(case[1], case[0], server_cpu)
            if args.warmup > 0:
                dnsperf(server.addr, datafile, args.warmup, args, client_cpu)
        for rnd in range(args.rounds):
            for case in cases if rnd % 2 == 0 else list(reversed(cases)):
                server = servers[case]
                tracer = _count_syscalls(server.pid, datafile) if args.syscalls else None
                cpu0, dns0 = server.cpu(), _children_cpu()
                t0 = time.perf_counter()
                result = dnsperf(server.addr, datafile, args.duration, args, client_cpu)
                wall = time.perf_counter() - t0
                if tracer is not None:
                    result["syscalls_per_query"] = _syscalls_per_query(
                        tracer, datafile, result["completed"])
                result["server_cpu_us_per_query"] = (
                    (server.cpu() - cpu0) / max(1.0, result["completed"]) * 1e6)
                result["dnsperf_cpu_share"] = (_children_cpu() - dns0) / wall
                runs[case].append(result)
                print(f"round {rnd + 1}/{args.rounds} {case[0]}/{case[1]}: "
                      f"{result['qps']:,.0f} queries/s, lost {result['lost']:.0f}, server "
                      f"{result['server_cpu_us_per_query']:.1f} µs/query", file=log)
    finally:
        for server in servers.values():
            server.close()
        os.unlink(datafile)
    summary = summarize(runs, args.plan)
    print_table(summary, log)
    meta = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S"), "seconds": round(time.time() - started, 1),
        "python": platform.python_version(), "cores": os.cpu_count(),
        "load_average_after": os.getloadavg(), "dnsperf": _dnsperf_version(),
        "duration": args.duration, "warmup": args.warmup, "rounds": args.rounds,
        "clients": args.clients, "outstanding": args.outstanding, "timeout": args.timeout,
        "dnsperf_buffer_kib": args.buffer_kib,
        "queries_in_file": args.queries, "buffer_bytes": BUFFER,
        "pinned": {"server": server_cpu, "dnsperf": client_cpu}, "syscalls": args.syscalls,
        "argv": sys.argv[1:] if argv is None else argv, **harness.source_version(),
    }
    doc = {"meta": meta, **summary}
    path = args.json if args.json is not None else (None if args.quick else default_json_path())
    if path == "-":
        print(json.dumps(doc, indent=1))
    elif path:
        with open(path, "w") as out:
            out.write(json.dumps(doc, indent=1) + "\n")
        print(f"written to {os.path.relpath(path)}", file=log)
    return 0


def _callgrind_main(args: argparse.Namespace, cases: list[tuple[str, str]], datafile: str,
                    argv: list[str] | None) -> int:
    if shutil.which("valgrind") is None:
        print("--callgrind needs valgrind (apt-get install valgrind)", file=sys.stderr)
        return 2
    rows = []
    for loop, responder in cases:
        row = instructions(responder, loop, datafile, args)
        rows.append(row)
        print(f"{loop}/{responder}: {row['instructions_per_query']:,.0f} instructions per query "
              f"({row['queries']:.0f} queries, {row['lost']:.0f} lost)", file=sys.stderr)
    for loop in args.loops:
        mine = [r for r in rows if r["loop"] == loop]
        ours = next((r for r in mine if r["responder"] == "aiodisp"), None)
        refs = [r for r in mine if r["responder"] != "aiodisp"]
        if ours and refs:
            best = min(refs, key=lambda r: r["instructions_per_query"])
            ours["vs_cheapest"] = ours["instructions_per_query"] / best["instructions_per_query"]
            print(f"{loop}: aiodisp {ours['vs_cheapest']:.2f}x the instructions of "
                  f"{best['responder']}", file=sys.stderr)
    doc = {"meta": {"date": time.strftime("%Y-%m-%d %H:%M:%S"), "tool": "callgrind",
                    "qps": args.callgrind_qps, "clients": args.clients,
                    "argv": sys.argv[1:] if argv is None else argv,
                    **harness.source_version()}, "instructions": rows}
    path = args.json if args.json is not None else None
    if path == "-":
        print(json.dumps(doc, indent=1))
    elif path:
        with open(path, "w") as out:
            out.write(json.dumps(doc, indent=1) + "\n")
    return 0


def _dnsperf_version() -> str:
    out = subprocess.run(["dnsperf", "-h"], capture_output=True, text=True, check=False)
    match = re.search(r"Version (\S+)", out.stdout + out.stderr)
    return match.group(1) if match else "?"


if __name__ == "__main__":
    raise SystemExit(main())
