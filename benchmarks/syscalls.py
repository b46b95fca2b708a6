"""System calls and kernel time per request, client and server, of the end-to-end benchmark.

    .venv/bin/python benchmarks/syscalls.py --renice -20            # ~1 min
    .venv/bin/python benchmarks/syscalls.py --quick --json -        # smoke
    .venv/bin/python benchmarks/syscalls.py --tool strace           # without perf (slows both)

Each case is ``run.py``'s end-to-end pairing: a peer's client (256 in flight,
``client_instructions.py``'s driver: a fixed number of requests, every reply
checked) against the same peer's own server, each pinned to its own core.
``perf stat`` counts the system calls (syscall tracepoints: counting only, no
slow-down) of the client process over its whole run and of the server over
the same time, and the CPU each spent in user space and in the kernel is read
meanwhile. Two runs, a short and a long one (20,000 and 100,000 requests), and
the difference over the 80,000 requests between them is the cost of one
request: start-up, imports and shutdown cancel out. ``EAGAIN`` counts the
reads that found the socket empty: one per wake-up for a reader that drains
its socket. With ``--tool strace`` (``strace -c -f``) every system call stops
the process, so the batching (datagrams per wake-up) is not that of an
unslowed run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import common  # noqa: E402
import harness  # noqa: E402

CASES = ("handrolled_reader/raw", "handrolled/raw", "aiodisp/ack", "aiodisp/raw")
CALLS = ("sendto", "recvfrom", "sendmsg", "recvmsg", "epoll_wait", "epoll_pwait", "getrandom")
EAGAIN = ("recvfrom", "recvmsg")


def _stat(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of process ``pid``."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        fields = f.read().rsplit(b")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def _perf_argv(pid: int | None, out: str, command: list[str] | None) -> list[str]:
    """perf stat counting system calls of process ``pid``, or of ``command`` it runs."""
    events = ["raw_syscalls:sys_enter"] + [f"syscalls:sys_enter_{c}" for c in CALLS]
    argv = ["perf", "stat", "-o", out]
    if pid is not None:
        argv += ["-p", str(pid)]
    for e in events:
        argv += ["-e", e]
    for c in EAGAIN:
        argv += ["-e", f"syscalls:sys_exit_{c}", "--filter", "ret == -11"]
    return [*argv, "--", *command] if command else argv


def _parse_perf(path: str) -> tuple[dict[str, int], float]:
    """perf stat's counts by system call, and the seconds it counted for."""
    counts: dict[str, int] = {}
    elapsed = 0.0
    with open(path) as f:
        for line in f:
            m = re.match(r"\s*([\d,]+)\s+\S+:(\S+)", line)
            if m is None:
                t = re.match(r"\s*([\d.]+) seconds time elapsed", line)
                if t:
                    elapsed = float(t.group(1))
                continue
            value, name = int(m.group(1).replace(",", "")), m.group(2)
            if name == "sys_enter":
                name = "total"
            elif name.startswith("sys_enter_"):
                name = name[len("sys_enter_"):]
            elif name.startswith("sys_exit_"):
                name = name[len("sys_exit_"):] + " EAGAIN"
            counts[name] = counts.get(name, 0) + value
    return counts, elapsed


def _parse_strace(path: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    with open(path) as f:
        for line in f:
            m = re.match(r"\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(\d*)\s*(\w+)$", line)
            if m:
                calls, errors, name = int(m.group(1)), m.group(2), m.group(3)
                key = "total" if name == "total" else name
                counts[key] = calls
                if errors and name in EAGAIN:
                    counts[f"{name} EAGAIN"] = int(errors)
    return counts


def _one(peer: str, variant: str, loop: str, server: harness.Server, count: int,
         args: argparse.Namespace) -> dict[str, Any]:
    """Counts and CPU of a client process making ``count`` requests, and of the server."""
    ccpu = None if args.no_pin else common.client_core()
    opts = {"loop": loop, "peer": peer, "variant": variant, "target": server.addr,
            "count": count}
    tmp = tempfile.mkdtemp()
    argv = [sys.executable, os.path.join(HERE, "client_instructions.py"), "--run",
            json.dumps(opts)]
    if ccpu is not None:
        argv = ["taskset", "-c", str(ccpu), *argv]
    if args.tool == "perf":
        client_argv = _perf_argv(None, os.path.join(tmp, "client"), argv)
        server_argv = _perf_argv(server.pid, os.path.join(tmp, "server"), None)
    else:
        client_argv = ["strace", "-c", "-f", "-o", os.path.join(tmp, "client"), *argv]
        server_argv = ["strace", "-c", "-f", "-o", os.path.join(tmp, "server"), "-p",
                       str(server.pid)]
    tracer = subprocess.Popen(server_argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.3)  # perf / strace attached
    s0 = _stat(server.pid)
    c0 = os.times()
    out = subprocess.run(client_argv, capture_output=True, text=True, env=harness._env(),
                         check=False, timeout=300)
    c1 = os.times()
    s1 = _stat(server.pid)
    tracer.send_signal(signal.SIGINT)
    tracer.wait(60)
    if out.returncode:
        raise RuntimeError(f"client {peer}/{variant} failed: {out.stderr[-2000:]}")
    result = {"client": _parse(args.tool, os.path.join(tmp, "client")),
              "server": _parse(args.tool, os.path.join(tmp, "server"))}
    result["client"]["user_s"] = c1.children_user - c0.children_user
    result["client"]["system_s"] = c1.children_system - c0.children_system
    result["server"]["user_s"], result["server"]["system_s"] = s1[0] - s0[0], s1[1] - s0[1]
    shutil.rmtree(tmp, ignore_errors=True)
    return result


def _parse(tool: str, path: str) -> dict[str, Any]:
    counts = _parse_perf(path)[0] if tool == "perf" else _parse_strace(path)
    return {"counts": counts}


def measure(case: str, loop: str, args: argparse.Namespace) -> dict[str, Any]:
    """Per request: the difference of a long and a short client run over the requests between."""
    peer, variant = case.split("/")
    scpu = None if args.no_pin else common.server_core()
    with harness.Server(peer=peer, variant=variant, loop=loop, cpu=scpu, port=0,
                        sockbuf=4 << 20) as server:
        t0 = time.perf_counter()
        small = _one(peer, variant, loop, server, args.requests[0], args)
        t1 = time.perf_counter()
        large = _one(peer, variant, loop, server, args.requests[1], args)
        t2 = time.perf_counter()
    n = args.requests[1] - args.requests[0]
    # (the long run's rate, start-up included: a rough figure of the load it ran at)
    result: dict[str, Any] = {"requests": n, "long_run_requests_per_s": args.requests[1]
                              / max(1e-9, t2 - t1), "short_run_s": t1 - t0}
    for side in ("client", "server"):
        a, b = small[side], large[side]
        keys = set(a["counts"]) | set(b["counts"])
        result[side] = {
            "per_request": {k: (b["counts"].get(k, 0) - a["counts"].get(k, 0)) / n
                            for k in sorted(keys)},
            "user_us_per_request": (b["user_s"] - a["user_s"]) / n * 1e6,
            "system_us_per_request": (b["system_s"] - a["system_s"]) / n * 1e6,
        }
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="one case, a short window")
    p.add_argument("--tool", choices=("perf", "strace"), default=None,
                   help="perf (default when installed) or strace")
    p.add_argument("--cases", default=",".join(CASES))
    p.add_argument("--loops", default="uvloop,asyncio")
    p.add_argument("--rounds", type=int, default=None, help="alternating rounds (2)")
    p.add_argument("--requests", default=None,
                   help="the short and the long run's requests (20000,100000)")
    p.add_argument("--no-pin", action="store_true")
    p.add_argument("--renice", type=int, default=None, metavar="N")
    p.add_argument("--json", metavar="PATH")
    args = p.parse_args(argv)
    if args.tool is None:
        args.tool = "perf" if shutil.which("perf") else "strace"
    if shutil.which(args.tool) is None:
        print(f"needs {args.tool} (apt-get install linux-perf or strace)", file=sys.stderr)
        return 2
    args.requests = [int(x) for x in (args.requests or (
        "2000,10000" if args.quick else "20000,100000")).split(",")]
    args.rounds = args.rounds or (1 if args.quick else 2)
    cases = [(loop, c) for loop in args.loops.split(",") for c in args.cases.split(",")]
    common.renice(args.renice)
    runs: dict[tuple[str, str], list[dict[str, Any]]] = {c: [] for c in cases}
    started = time.time()
    for rnd in range(args.rounds):
        for case in cases if rnd % 2 == 0 else list(reversed(cases)):
            r = measure(case[1], case[0], args)
            runs[case].append(r)
            print(f"round {rnd + 1} {case[0]} {case[1]}: "
                  f"client {r['client']['per_request'].get('total', 0):.2f} syscalls/request, "
                  f"server {r['server']['per_request'].get('total', 0):.2f}", file=sys.stderr)
    rows = []
    for (loop, case), results in runs.items():
        row: dict[str, Any] = {"loop": loop, "case": case, "rounds": len(results)}
        for side in ("client", "server"):
            keys = sorted({k for r in results for k in r[side]["per_request"]})
            row[side] = {
                "per_request": {k: common.median([r[side]["per_request"].get(k, 0.0)
                                                  for r in results]) for k in keys},
                "per_request_range": {k: [min(r[side]["per_request"].get(k, 0.0)
                                              for r in results),
                                          max(r[side]["per_request"].get(k, 0.0)
                                              for r in results)] for k in keys},
                "user_us_per_request": common.median(
                    [r[side]["user_us_per_request"] for r in results]),
                "system_us_per_request": common.median(
                    [r[side]["system_us_per_request"] for r in results]),
            }
        row["per_round"] = results
        rows.append(row)
    print("\n| loop | case | side | syscalls/request (range) | sends | receives "
          "| of which EAGAIN | epoll waits | user µs/req | kernel µs/req |", file=sys.stderr)
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|", file=sys.stderr)
    for row in rows:
        for side in ("client", "server"):
            pr = row[side]["per_request"]
            lo, hi = row[side]["per_request_range"].get("total", [0, 0])
            sends = pr.get("sendto", 0) + pr.get("sendmsg", 0)
            recvs = pr.get("recvfrom", 0) + pr.get("recvmsg", 0)
            again = pr.get("recvfrom EAGAIN", 0) + pr.get("recvmsg EAGAIN", 0)
            waits = pr.get("epoll_wait", 0) + pr.get("epoll_pwait", 0)
            print(f"| {row['loop']} | {row['case']} | {side} | "
                  f"{pr.get('total', 0):.2f} ({lo:.2f}-{hi:.2f}) | {sends:.2f} | {recvs:.2f} | "
                  f"{again:.2f} | {waits:.2f} | {row[side]['user_us_per_request']:.1f} | "
                  f"{row[side]['system_us_per_request']:.1f} |", file=sys.stderr)
    meta = {"date": time.strftime("%Y-%m-%d %H:%M:%S"), "seconds": round(time.time() - started, 1),
            "python": platform.python_version(), "kernel": platform.release(), "tool": args.tool,
            "requests": args.requests, "rounds": args.rounds, "in_flight": 256,
            "load_average_after": os.getloadavg(),
            "argv": sys.argv[1:] if argv is None else argv, **harness.source_version()}
    if args.json:
        text = json.dumps({"meta": meta, "results": rows}, indent=1)
        if args.json == "-":
            print(text)
        else:
            with open(args.json, "w") as f:
                f.write(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
