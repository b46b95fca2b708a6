"""User-space instructions per request of a whole client or server, counted by callgrind.

CPU time per request on a shared 2-core machine moves by ±10 % between runs;
instruction counts do not. This runs each client (the loop, the library, the
peer's code and the cyclic GC, everything but the kernel) under
``valgrind --tool=callgrind`` against the common echo server over real
loopback UDP, 256 requests in flight, twice (2,000 and 8,000 requests), and
reports the difference over 6,000: the instructions one request costs.

    .venv/bin/python benchmarks/client_instructions.py
    .venv/bin/python benchmarks/client_instructions.py --loop asyncio --cases aiodisp/raw

Under valgrind the client runs ~50x slower than the server, so its socket
always holds a backlog: the figures are those of a client at full load (many
datagrams per wake-up). With ``--side server`` each peer's own server runs under
callgrind instead (the same difference of two runs), driven by a client that is
not: the hand-rolled one for raw framing, aiodisp's for ACK framing.
Needs valgrind (Debian package valgrind).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import common  # noqa: E402
import harness  # noqa: E402
import peers  # noqa: E402

CASES = ("handrolled/raw", "aiodisp/ack", "aiodisp/raw")
IN_FLIGHT = 256


async def _run(opts: dict[str, Any]) -> None:
    peer = peers.load(opts["peer"])
    call, close = await peer.open_client(opts["variant"], tuple(opts["target"]), 30.0)
    common.set_udp_buffers(4 << 20)  # the echo server answers in bursts: hold them all
    check = getattr(peer, "check_reply", common.check_reply)
    body = os.urandom(common.PAYLOAD)
    left = opts["count"]
    wrong = 0

    async def worker(first: int) -> None:
        nonlocal left, wrong
        i = first
        while left > 0:
            left -= 1
            data = common.message(i, body)
            if not check(i, data, await call(i, data)):
                wrong += 1
            i += IN_FLIGHT

    try:
        await asyncio.gather(*(worker(n + 1) for n in range(IN_FLIGHT)))
    finally:
        await close()
    if wrong:
        raise SystemExit(f"{wrong} wrong replies")


def _refs(stderr: str) -> int:
    match = re.search(r"refs:\s+([\d,]+)", stderr)
    if match is None:
        raise RuntimeError(f"callgrind printed no instruction count:\n{stderr}")
    return int(match.group(1).replace(",", ""))


def _client(loop: str, peer: str, variant: str, target: Any, count: int,
            valgrind: bool = True) -> int:
    opts = {"loop": loop, "peer": peer, "variant": variant, "target": target, "count": count}
    prefix = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null"] if valgrind else []
    out = subprocess.run(
        [*prefix, sys.executable, __file__, "--run", json.dumps(opts)],
        capture_output=True, text=True, env=harness._env(),
    )
    if out.returncode:
        raise RuntimeError(f"the client failed:\n{out.stdout}\n{out.stderr}")
    return _refs(out.stderr) if valgrind else 0


def _server(loop: str, peer: str, variant: str, count: int) -> int:
    opts = {"peer": peer, "variant": variant, "loop": loop, "cpu": None, "sockbuf": 4 << 20}
    proc = subprocess.Popen(
        ["valgrind", "--tool=callgrind",
         f"--callgrind-out-file={os.environ.get('CALLGRIND_OUT', '/dev/null')}", sys.executable,
         os.path.join(HERE, "server_main.py"), json.dumps(opts)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=harness._env(),
    )
    assert proc.stdout is not None and proc.stdin is not None and proc.stderr is not None
    try:
        target = json.loads(proc.stdout.readline())
        driver = ("aiodisp", "ack") if variant == "ack" else ("handrolled", "raw")
        _client(loop, *driver, target, count, valgrind=False)
    finally:
        proc.stdin.close()  # the server stops when its stdin closes
        stderr = proc.stderr.read()
        proc.wait(120)
    return _refs(stderr)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loop", choices=common.LOOPS, default="uvloop")
    parser.add_argument("--cases", default=",".join(CASES),
                        help=f"comma list of peer/variant ({','.join(CASES)})")
    parser.add_argument("--side", choices=["client", "server"], default="client")
    parser.add_argument("--options", default="{}", metavar="JSON",
                        help="the aiodisp client's Dispatcher options, e.g. "
                        "'{\"congestion\": false}'")
    parser.add_argument("--run", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not args.run:  # (the measured client reads them from its environment)
        os.environ["AIODISP_BENCH_OPTIONS"] = json.dumps(json.loads(args.options))
    if args.run:
        opts = json.loads(args.run)
        common.run_on(opts["loop"], _run(opts))
        return 0
    if shutil.which("valgrind") is None:
        print("needs valgrind (apt-get install valgrind)", file=sys.stderr)
        return 2
    cases = [c.split("/") for c in args.cases.split(",")]
    results = {}
    if args.side == "server":
        for peer, variant in cases:
            small = _server(args.loop, peer, variant, 2_000)
            large = _server(args.loop, peer, variant, 8_000)
            results[f"{peer}/{variant}"] = per = (large - small) // 6_000
            print(f"{args.loop} server {peer}/{variant}: {per:,} instructions per request",
                  flush=True)
    else:
        modes = sorted({peers.load(p).ECHO_MODE[v] for p, v in cases})
        with harness.Server(peer="echo", modes=modes, loop="uvloop", cpu=None) as server:
            for peer, variant in cases:
                target = server.addr[peers.load(peer).ECHO_MODE[variant]]
                small = _client(args.loop, peer, variant, target, 2_000)
                large = _client(args.loop, peer, variant, target, 8_000)
                results[f"{peer}/{variant}"] = per = (large - small) // 6_000
                print(f"{args.loop} {peer}/{variant}: {per:,} instructions per request",
                      flush=True)
    base = results.get("handrolled/raw")
    if base:
        for name, per in results.items():
            print(f"  {name}: {per / base:.2f}x the hand-rolled matcher's")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
