"""Multi-core serving: 1 against 2 aiodisp server processes on one UDP port (SO_REUSEPORT).

    python benchmarks/multicore.py                     # workers 1,2; 3 interleaved rounds
    python benchmarks/multicore.py --quick --json -

Each worker is ``aiodisp.open_udp(adapter, addr, reuse_port=True)`` running the
echo server of ``aiodisp bench`` in its own process; the kernel spreads
datagrams over the workers by a hash of the sender's address and port, so the
load comes from ``--clients`` client processes (aiodisp clients, each its own
socket). Nothing is pinned unless ``--pin``: on a 2-core machine the clients
and the workers share the cores, and the scheduler places them.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common
import harness


def run_clients(n: int, opts: dict[str, Any]) -> list[dict[str, Any]]:
    """``n`` client processes at once; their Measurements."""
    procs = [
        subprocess.Popen(
            [sys.executable, os.path.join(harness.HERE, "client_main.py"), json.dumps(opts)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=harness._env(),
        )
        for _ in range(n)
    ]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=opts["duration"] + opts["warmup"] + 60)
        if proc.returncode != 0:
            raise RuntimeError(f"client failed: {err.decode()[-2000:]}")
        results.append(json.loads(out.splitlines()[-1]))
    return results


def measure(workers: int, args: argparse.Namespace) -> dict[str, Any]:
    port = harness.free_port()
    cores = common.cores()
    servers = [
        harness.Server(peer="aiodisp", variant=args.framing, loop=args.loop, port=port,
                       reuse_port=True, cpu=cores[-1 - k % len(cores)] if args.pin else None,
                       sockbuf=4 << 20)
        for k in range(workers)
    ]
    try:
        cpu0 = [s.cpu() for s in servers]
        results = run_clients(args.clients, {
            "peer": "aiodisp", "variant": args.framing, "loop": args.loop,
            "target": ["127.0.0.1", port], "in_flight": args.inflight,
            "duration": args.duration, "warmup": args.warmup, "timeout": 2.0,
            "cpu": cores[0] if args.pin else None, "sockets": args.sockets,
            "sockbuf": 4 << 20,
        })
        server_cpu = [s.cpu() - c for s, c in zip(servers, cpu0, strict=True)]
    finally:
        for s in servers:
            s.close()
    done = sum(r["completed"] for r in results)
    return {
        "workers": workers,
        "requests_per_s": sum(r["requests_per_s"] for r in results),
        "p99_ms": max(r["p99_ms"] for r in results),
        "errors": sum(r["errors"] + r["wrong"] for r in results),
        "server_cpu_us_per_request": sum(server_cpu) / max(1, done) * 1e6,
        "server_cpu_share": [round(c / max(1e-9, sum(server_cpu)), 3) for c in server_cpu],
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="0.5 s runs, 1 round")
    p.add_argument("--workers", default="1,2", help="comma list of worker counts (1,2)")
    p.add_argument("--clients", type=int, default=2, help="client processes (2)")
    p.add_argument("--sockets", type=int, default=4,
                   help="sockets per client process (4): the kernel picks a worker by the "
                        "sender's port, so more sockets spread the load more evenly")
    p.add_argument("--inflight", type=int, default=128, help="requests in flight per client")
    p.add_argument("--framing", choices=("ack", "raw"), default="ack")
    p.add_argument("--loop", choices=common.LOOPS, default="uvloop")
    p.add_argument("--duration", type=float, default=None)
    p.add_argument("--warmup", type=float, default=None)
    p.add_argument("--rounds", type=int, default=None)
    p.add_argument("--pin", action="store_true",
                   help="pin clients to the first core, workers to the others round-robin")
    p.add_argument("--json", metavar="PATH", help="write the results as JSON ('-': stdout)")
    p.add_argument("--renice", type=int, default=None, metavar="N",
                   help="run at niceness N (e.g. -20 as root: the benchmark gets the CPU "
                        "before other work on a shared machine)")
    args = p.parse_args(argv)
    common.renice(args.renice)
    common.exit_on_sigterm()
    args.duration = args.duration or (0.5 if args.quick else 3.0)
    args.warmup = args.warmup if args.warmup is not None else (0.2 if args.quick else 0.5)
    args.rounds = args.rounds or (1 if args.quick else 3)
    counts = [int(x) for x in args.workers.split(",")]
    per: dict[int, list[dict[str, Any]]] = {w: [] for w in counts}
    for r in range(args.rounds):
        for w in counts if r % 2 == 0 else reversed(counts):
            per[w].append(measure(w, args))
    rows = []
    log = sys.stderr if args.json == "-" else sys.stdout
    print(f"SO_REUSEPORT serving, {args.clients} clients ({args.sockets} sockets each) x "
          f"{args.inflight} in flight, "
          f"{args.framing} framing, {args.loop}, medians of {args.rounds} rounds:", file=log)
    for w in counts:
        row = {"workers": w, "rounds": per[w]}
        for key in ("requests_per_s", "p99_ms", "server_cpu_us_per_request"):
            row[key] = common.median([x[key] for x in per[w]])
        rows.append(row)
        print(f"  {w} worker(s): {row['requests_per_s']:>9,.0f} req/s, "
              f"p99 {row['p99_ms']:.2f} ms, server CPU {row['server_cpu_us_per_request']:.1f}"
              f" µs/req, CPU shares {per[w][-1]['server_cpu_share']}", file=log)
    if args.json:
        text = json.dumps({"framing": args.framing, "loop": args.loop, "results": rows}, indent=1)
        if args.json == "-":
            print(text)
        else:
            with open(args.json, "w") as f:
                f.write(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
