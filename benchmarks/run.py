"""The comparison benchmark: aiodisp against hand-rolled matchers, rpcudp and aiocoap.

    python benchmarks/run.py                       # full matrix (~15-25 min)
    python benchmarks/run.py --quick               # seconds-long smoke
    python benchmarks/run.py --peers aiodisp,handrolled --loops uvloop --inflight 256

Two modes. ``client``: every client talks to ONE common fast echo server
(echo_server.py, uvloop, raw socket drained per wake-up), so the numbers
compare the clients. ``e2e``: each peer talks to its own server on the same
loop. Servers are long-lived processes pinned to the last core; each client run
is a fresh process pinned to the first core. Rounds interleave every case (the
order reversed on odd rounds) so that drift on a shared machine hits every case
alike; the table shows medians over rounds, and target ratios are medians of
per-round ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common
import harness
import peers
import report
import targets

MODES = ("client", "e2e")
DEFAULT_PLOT = os.path.join(harness.ROOT, "docs", "performance.png")


def _csv(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="seconds-long smoke: 0.5 s runs, 1 round, 256 in flight, client mode")
    p.add_argument("--duration", type=float, default=None, help="measured seconds per run (3)")
    p.add_argument("--warmup", type=float, default=None, help="unmeasured seconds first (0.5)")
    p.add_argument("--rounds", type=int, default=None, help="interleaved rounds (3)")
    p.add_argument("--peers", type=_csv, default=None,
                   help=f"comma list of {','.join(peers.PEERS)} (default: every one whose "
                        "library is installed)")
    p.add_argument("--variants", type=_csv, default=None,
                   help="only these variants (ack,raw,rpc,con,non)")
    p.add_argument("--loops", type=_csv, default=list(common.LOOPS), help="asyncio,uvloop")
    p.add_argument("--inflight", type=lambda s: [int(x) for x in _csv(s)], default=None,
                   help="comma list of requests in flight (1,16,256)")
    p.add_argument("--modes", type=_csv, default=None, help="client,e2e (both)")
    p.add_argument("--timeout", type=float, default=2.0, help="per-request timeout")
    p.add_argument("--no-pin", action="store_true", help="do not pin processes to cores")
    p.add_argument("--client-gc", choices=("on", "off", "freeze"), default="on",
                   help="diagnostic: run the clients with the cyclic GC off or frozen")
    p.add_argument("--sockbuf", type=int, default=4 << 20, metavar="BYTES",
                   help="receive/send buffer of every client and server UDP socket, capped by "
                        "net.core.rmem_max (default 4 MiB; 0: the OS default)")
    p.add_argument("--json", metavar="PATH", help="write the results as JSON ('-': stdout)")
    p.add_argument("--plot", metavar="PATH", default=None,
                   help=f"write a PNG plot (default {os.path.relpath(DEFAULT_PLOT)}; "
                        "none with --quick)")
    p.add_argument("--no-plot", action="store_true")
    p.add_argument("--renice", type=int, default=None, metavar="N",
                   help="run at niceness N (e.g. -20 as root: the benchmark gets the CPU "
                        "before other work on a shared machine)")
    args = p.parse_args(argv)
    common.renice(args.renice)
    common.exit_on_sigterm()
    q = args.quick
    args.duration = args.duration or (0.5 if q else 3.0)
    args.warmup = args.warmup if args.warmup is not None else (0.2 if q else 0.5)
    args.rounds = args.rounds or (1 if q else 3)
    args.inflight = args.inflight or ([256] if q else [1, 16, 256])
    args.modes = args.modes or (["client"] if q else list(MODES))
    if args.plot is None and not q:
        args.plot = DEFAULT_PLOT
    if args.no_plot:
        args.plot = None
    if args.peers is None:
        args.peers = []
        for name in peers.PEERS:
            try:
                peers.load(name)
            except ImportError as exc:
                print(f"skipping {name}: {exc} (pip install -e '.[bench]')", file=sys.stderr)
            else:
                args.peers.append(name)
    for name in args.peers:
        if name not in peers.PEERS:
            p.error(f"unknown peer {name!r}")
        try:
            peers.load(name)
        except ImportError as exc:
            p.error(f"peer {name} needs a library that is not installed: {exc}")
    for loop in args.loops:
        if loop not in common.LOOPS:
            p.error(f"unknown loop {loop!r}")
    for mode in args.modes:
        if mode not in MODES:
            p.error(f"unknown mode {mode!r}")
    return args


def plan(args: argparse.Namespace) -> list[targets.Case]:
    cases: list[targets.Case] = []
    for mode in args.modes:
        for loop in args.loops:
            for inflight in args.inflight:
                for name in args.peers:
                    for variant in peers.load(name).VARIANTS:
                        if args.variants is None or variant in args.variants:
                            cases.append((mode, loop, inflight, name, variant))
    return cases


class Servers:
    """Server processes, started on first use and kept for every round."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.cpu = None if args.no_pin else common.server_core()
        self.sockbuf = args.sockbuf
        self.running: dict[tuple[str, ...], harness.Server] = {}

    def for_case(self, case: targets.Case) -> tuple[harness.Server, Any]:
        mode, loop, _, name, variant = case
        if mode == "client":
            key: tuple[str, ...] = ("echo",)
            if key not in self.running:
                from echo_server import MODES as ECHO_MODES

                self.running[key] = harness.Server(
                    peer="echo", modes=list(ECHO_MODES), loop="uvloop", cpu=self.cpu,
                    sockbuf=self.sockbuf,
                )
            server = self.running[key]
            return server, server.addr[peers.load(name).ECHO_MODE[variant]]
        key = (name, variant, loop)
        if key not in self.running:
            port = harness.free_port() if name == "aiocoap" else 0
            self.running[key] = harness.Server(
                peer=name, variant=variant, loop=loop, cpu=self.cpu, port=port,
                sockbuf=self.sockbuf,
            )
        server = self.running[key]
        return server, server.addr

    def close(self) -> None:
        for server in self.running.values():
            server.close()
        self.running.clear()


def measure_case(args: argparse.Namespace, servers: Servers, case: targets.Case) -> dict[str, Any]:
    _, loop, inflight, name, variant = case
    server, target = servers.for_case(case)
    cpu0 = server.cpu()
    result = harness.run_client(
        peer=name, variant=variant, loop=loop, target=target, in_flight=inflight,
        duration=args.duration, warmup=args.warmup, timeout=args.timeout,
        cpu=None if args.no_pin else common.client_core(), sockbuf=args.sockbuf,
        gc=args.client_gc,
    )
    server_cpu = server.cpu() - cpu0  # includes warm-up and drain: an upper bound
    n = max(1, result["completed"])
    result["server_cpu_us_per_request"] = server_cpu / n * 1e6
    return result


def aggregate(rounds: dict[targets.Case, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    rows = []
    for case, results in rounds.items():
        mode, loop, inflight, name, variant = case
        row: dict[str, Any] = {"mode": mode, "loop": loop, "in_flight": inflight,
                               "peer": name, "variant": variant, "rounds": len(results)}
        for key in ("requests_per_s", "p50_ms", "p99_ms", "cpu_us_per_request",
                    "server_cpu_us_per_request"):
            row[key] = common.median([r[key] for r in results])
        row["errors"] = sum(r["errors"] + r["wrong"] for r in results)
        row["client_socket_drops"] = sum(r["extra"].get("socket_drops", 0) for r in results)
        row["per_round"] = results
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cases = plan(args)
    if not cases:
        print("nothing to run", file=sys.stderr)
        return 2
    per_run = args.duration + args.warmup + 0.8
    print(f"{len(cases)} cases x {args.rounds} rounds, ~{len(cases) * args.rounds * per_run:.0f}"
          f" s; load average before: {os.getloadavg()[0]:.2f}", file=sys.stderr)
    rounds: dict[targets.Case, list[dict[str, Any]]] = {c: [] for c in cases}
    servers = Servers(args)
    started = time.time()
    try:
        for r in range(args.rounds):
            order = cases if r % 2 == 0 else list(reversed(cases))
            for i, case in enumerate(order, 1):
                result = measure_case(args, servers, case)
                rounds[case].append(result)
                print(f"round {r + 1}/{args.rounds} case {i}/{len(cases)} "
                      f"{'/'.join(map(str, case))}: {result['requests_per_s']:,.0f} req/s, "
                      f"p99 {result['p99_ms']:.2f} ms, {result['errors']} errors, "
                      f"{result['extra'].get('socket_drops', 0)} client socket drops",
                      file=sys.stderr)
    finally:
        servers.close()
    rows = aggregate(rounds)
    checked = targets.evaluate(rounds)
    report.print_results(rows, checked, stderr=args.json == "-")
    meta = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "seconds": round(time.time() - started, 1),
        "python": platform.python_version(),
        "cores": os.cpu_count(),
        "load_average_after": os.getloadavg(),
        "duration": args.duration, "warmup": args.warmup, "rounds": args.rounds,
        "sockbuf": args.sockbuf, "client_gc": args.client_gc,
        "argv": sys.argv[1:] if argv is None else argv,
        **harness.source_version(),
    }
    if args.json:
        doc = {"meta": meta, "results": rows, "targets": [t.as_dict() for t in checked]}
        text = json.dumps(doc, indent=1)
        if args.json == "-":
            print(text)
        else:
            with open(args.json, "w") as f:
                f.write(text + "\n")
    if args.plot and report.plot(rows, args.plot):
        print(f"plot written to {args.plot}", file=sys.stderr)
    failed = sum(row["errors"] for row in rows if row["peer"] == "aiodisp")
    return 1 if failed and args.quick else 0


if __name__ == "__main__":
    raise SystemExit(main())
