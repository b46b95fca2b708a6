"""Where a client spends its CPU: py-spy samples of one client at full load.

    python benchmarks/profile.py                          # aiodisp ack, both loops, 256
    python benchmarks/profile.py --peer aiodisp --variant raw --loops uvloop --native
    python benchmarks/profile.py --side server --variant raw --loops uvloop

The client runs against the common echo server (as in ``run.py``'s client
mode), pinned to the first core; after its warm-up, ``py-spy record`` attaches
to it for ``--duration`` seconds. With ``--side server`` the peer's own server
is sampled instead, under the load of the cheapest client of its framing.
Idle samples (the loop waiting in epoll) are left out, so the percentages are
shares of the sampled process's busy CPU time. Prints
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


def _name(frame: str, line: bool = False) -> str:
    m = _FRAME.match(frame)
    if not m:
        return frame
    path = m["file"]
    short = "/".join(path.split("/")[-2:]) if "/" in path else path
    if line and m["line"]:
        return f"{m['func']} ({short}:{m['line']})"
    return f"{m['func']} ({short})"


def summarize(raw: str, top: int) -> dict[str, Any]:
    """Self and inclusive sample shares per function from py-spy's collapsed stacks."""
    self_t: collections.Counter[str] = collections.Counter()
    lines: collections.Counter[str] = collections.Counter()
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
            # the innermost aiodisp line: where aiodisp's own code spent it (C calls included)
            for raw_frame in reversed(stack.split(";")):
                if "aiodisp/" in raw_frame:
                    lines[_name(raw_frame, line=True)] += n
                    break
        for f in set(frames):
            incl[f] += n
    pct = (lambda c: round(100.0 * c / total, 1)) if total else (lambda c: 0.0)
    return {
        "samples": total,
        "self": [(f, pct(c)) for f, c in self_t.most_common(top)],
        "inclusive": [(f, pct(c)) for f, c in incl.most_common(top * 2)],
        "aiodisp_lines": [(f, pct(c)) for f, c in lines.most_common(top)],
    }


def _sample(args: argparse.Namespace, pid: int) -> str:
    """py-spy's collapsed stacks of process ``pid`` over ``args.duration`` seconds."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "raw.txt")
        cmd = [args.py_spy, "record", "-p", str(pid), "-d", str(int(args.duration)),
               "-r", str(args.rate), "-f", "raw", "-o", out]
        if args.native:
            cmd.append("--native")
        spy = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if spy.returncode != 0 or not os.path.exists(out):
            raise RuntimeError(f"py-spy failed: {spy.stderr[-2000:]}")
        with open(out) as f:
            return f.read()


def profile(args: argparse.Namespace, loop: str, echo: harness.Server) -> dict[str, Any]:
    """Sample the client (``--side client``) or the peer's own server (``--side server``)."""
    peer = peers.load(args.peer)
    server: harness.Server | None = None
    if args.side == "server":
        server = harness.Server(peer=args.peer, variant=args.variant, loop=loop,
                                cpu=common.server_core(), sockbuf=4 << 20)
        target = server.addr
        # the load: the cheapest client that speaks the framing, on uvloop
        load_peer = "handrolled_reader" if peer.ECHO_MODE[args.variant] == "raw" else args.peer
        client_opts = {"peer": load_peer, "variant": "raw" if load_peer != args.peer
                       else args.variant, "loop": "uvloop"}
    else:
        target = echo.addr[peer.ECHO_MODE[args.variant]]
        client_opts = {"peer": args.peer, "variant": args.variant, "loop": loop}
    opts = {
        **client_opts, "target": target, "in_flight": args.inflight,
        "duration": args.duration + 1.0, "warmup": args.warmup, "timeout": 2.0,
        "cpu": common.client_core(), "sockbuf": 4 << 20,
    }
    client = subprocess.Popen(
        [sys.executable, os.path.join(harness.HERE, "client_main.py"), json.dumps(opts)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=harness._env(),
    )
    try:
        time.sleep(args.warmup + 0.8)  # the imports and the warm-up
        cpu0 = server.cpu() if server is not None else 0.0
        raw = _sample(args, server.pid if server is not None else client.pid)
        server_cpu = server.cpu() - cpu0 if server is not None else 0.0
        stdout, _ = client.communicate(timeout=args.duration + args.warmup + 60)
    finally:
        if client.poll() is None:
            client.kill()
            client.wait()
        if server is not None:
            server.close()
    if args.collapsed:
        with open(args.collapsed.replace("{loop}", loop).replace("{side}", args.side), "w") as f:
            f.write(raw)
    result = summarize(raw, args.top)
    result["loop"] = loop
    result["side"] = args.side
    m = json.loads(stdout.splitlines()[-1]) if stdout else {}
    if server is not None and m.get("requests_per_s"):
        # CPU per request of the sampled server over the sampled window
        m["cpu_us_per_request"] = server_cpu / (m["requests_per_s"] * args.duration) * 1e6
    result["measurement"] = m
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
    p.add_argument("--side", choices=("client", "server"), default="client",
                   help="sample the client (against the common echo server) or the peer's own "
                        "server (loaded by the cheapest client of its framing)")
    p.add_argument("--collapsed", metavar="PATH",
                   help="also keep py-spy's collapsed stacks ({loop} and {side} expand), "
                        "e.g. for flamegraph.pl or speedscope")
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
            print(f"\n== {args.side} {args.peer}/{args.variant} on {loop}, "
                  f"{args.inflight} in flight: "
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
            if r["aiodisp_lines"]:
                print("  by aiodisp line (the innermost aiodisp frame of each sample, with "
                      "everything it called):")
                for f, pct in r["aiodisp_lines"]:
                    print(f"    {pct:5.1f}%  {pct * us:5.2f} µs  {f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
