"""Where a client spends its CPU: py-spy samples of one client at full load.

    python benchmarks/profile.py                          # aiodisp ack, both loops, 256
    python benchmarks/profile.py --peer aiodisp --variant raw --loop uvloop --native
    python benchmarks/profile.py --flamegraph docs/profile-asyncio.svg

The client runs against the common echo server (as in ``run.py``'s client
mode), pinned to the first core; after its warm-up, ``py-spy record`` attaches
to it for ``--duration`` seconds. Idle samples (the loop waiting in epoll) are
left out, so the percentages are shares of the client's busy CPU time. Prints
the functions with the most self time, and the inclusive share of the main
stages of a request. Needs py-spy (``pip install py-spy``; not a dependency).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common
import harness
import peers

# "function (path:line)" as py-spy writes a frame in raw (collapsed) output.
_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^():]*?)(?::(?P<line>\d+))?\)$")


def _name(frame: str) -> str:
    m = _FRAME.match(frame)
    if not m:
        return frame
    path = m["file"]
    short = "/".join(path.split("/")[-2:]) if "/" in path else path
    return f"{m['func']} ({short})"


def summarize(raw: str, top: int) -> dict[str, Any]:
    """Self and inclusive sample shares per function from py-spy's collapsed stacks."""
    self_t: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [_name(f) for f in stack.split(";") if f]
        if frames:
            self_t[frames[-1]] += n
        for f in set(frames):
            incl[f] += n
    pct = (lambda c: round(100.0 * c / total, 1)) if total else (lambda c: 0.0)
    return {
        "samples": total,
        "self": [(f, pct(c)) for f, c in self_t.most_common(top)],
        "inclusive": [(f, pct(c)) for f, c in incl.most_common(top * 2)],
    }


def profile(args: argparse.Namespace, loop: str, echo: harness.Server) -> dict[str, Any]:
    peer = peers.load(args.peer)
    opts = {
        "peer": args.peer, "variant": args.variant, "loop": loop,
        "target": echo.addr[peer.ECHO_MODE[args.variant]], "in_flight": args.inflight,
        "duration": args.duration + 1.0, "warmup": args.warmup, "timeout": 2.0,
        "cpu": common.client_core(),
    }
    client = subprocess.Popen(
        [sys.executable, os.path.join(harness.HERE, "client_main.py"), json.dumps(opts)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=harness._env(),
    )
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "raw.txt")
        time.sleep(args.warmup + 0.8)  # the imports and the warm-up
        cmd = [args.py_spy, "record", "-p", str(client.pid), "-d", str(int(args.duration)),
               "-r", str(args.rate), "-f", "raw", "-o", out]
        if args.native:
            cmd.append("--native")
        spy = subprocess.run(cmd, capture_output=True, text=True, check=False)
        stdout, _ = client.communicate(timeout=args.duration + args.warmup + 60)
        if spy.returncode != 0 or not os.path.exists(out):
            raise RuntimeError(f"py-spy failed: {spy.stderr[-2000:]}")
        with open(out) as f:
            raw = f.read()
        if args.flamegraph:
            path = args.flamegraph.replace("{loop}", loop)
            with open(path + ".collapsed", "w") as f:
                f.write(raw)
    result = summarize(raw, args.top)
    result["loop"] = loop
    result["measurement"] = json.loads(stdout.splitlines()[-1]) if stdout else {}
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--peer", default="aiodisp", choices=peers.PEERS)
    p.add_argument("--variant", default="ack")
    p.add_argument("--loops", default="asyncio,uvloop")
    p.add_argument("--inflight", type=int, default=256)
    p.add_argument("--duration", type=float, default=5.0, help="seconds sampled (5)")
    p.add_argument("--warmup", type=float, default=0.5)
    p.add_argument("--rate", type=int, default=500, help="samples a second (500)")
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--native", action="store_true", help="also sample C frames (uvloop)")
    p.add_argument("--flamegraph", metavar="PATH",
                   help="also keep the collapsed stacks at PATH.collapsed ({loop} expands)")
    p.add_argument("--json", metavar="PATH")
    p.add_argument("--renice", type=int, default=None, metavar="N",
                   help="run at niceness N (e.g. -20 as root: the benchmark gets the CPU "
                        "before other work on a shared machine)")
    args = p.parse_args(argv)
    common.renice(args.renice)
    common.exit_on_sigterm()
    args.py_spy = shutil.which("py-spy") or os.path.join(os.path.dirname(sys.executable),
                                                          "py-spy")
    if not os.path.exists(args.py_spy):
        p.error("py-spy is not installed (pip install py-spy)")
    results = []
    with harness.Server(peer="echo", modes=["raw", "ack", "rpc", "coap"], loop="uvloop",
                        cpu=common.server_core()) as echo:
        for loop in args.loops.split(","):
            r = profile(args, loop, echo)
            results.append(r)
            m = r["measurement"]
            print(f"\n== {args.peer}/{args.variant} on {loop}, {args.inflight} in flight: "
                  f"{m.get('requests_per_s', 0):,.0f} req/s while sampled, "
                  f"{m.get('cpu_us_per_request', 0):.1f} µs CPU/request, "
                  f"{r['samples']} busy samples")
            us = m.get("cpu_us_per_request", 0.0) / 100.0
            print("  self time (share of busy samples, and µs of CPU per request):")
            for f, pct in r["self"]:
                print(f"    {pct:5.1f}%  {pct * us:5.2f} µs  {f}")
            print("  inclusive:")
            for f, pct in r["inclusive"]:
                print(f"    {pct:5.1f}%  {pct * us:5.2f} µs  {f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
