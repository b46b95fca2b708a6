"""CoAP CON GET/s at 50 in flight against libcoap's server: aiodisp's client vs aiocoap's.

libcoap's example server (``coap-server-notls``, C, single-threaded) runs on a free
loopback port; each client runs in its own process, alternately, for
``--duration`` seconds per round, keeping ``--inflight`` confirmable GETs of ``/``
in flight (each answered piggybacked, 136 bytes of payload), and reports the
GETs completed per second and its CPU time per GET. The median of the rounds is
printed (and written as JSON with ``--json``).

    .venv/bin/python benchmarks/coap_bench.py
    .venv/bin/python benchmarks/coap_bench.py --rounds 5 --duration 5 --json coap.json

Needs libcoap3-bin (Debian) and aiocoap (``pip install -e '.[bench]'``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def start_libcoap(logdir: str) -> tuple[subprocess.Popen[bytes], tuple[str, int]]:
    exe = shutil.which("coap-server-notls")
    if exe is None:
        raise SystemExit("coap-server-notls is not installed (Debian: libcoap3-bin)")
    port = free_port()
    log = open(os.path.join(logdir, "libcoap.log"), "wb")  # noqa: SIM115
    proc = subprocess.Popen([exe, "-A", "127.0.0.1", "-p", str(port)], stdout=log,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    time.sleep(0.3)
    return proc, ("127.0.0.1", port)


# ---------------------------------------------------------------------- the clients


async def run_aiodisp(target: tuple[str, int], duration: float, inflight: int) -> int:
    sys.path.insert(0, os.path.join(ROOT, "examples"))
    import coap

    import aiodisp

    retry = aiodisp.RetryPolicy(initial_timeout=2.0, backoff=2.0, max_attempts=5)
    client = await coap.CoapClient.open(("127.0.0.1", 0), retry=retry, timeout=30.0)
    done = 0
    stop = time.perf_counter() + duration

    async def worker() -> None:
        nonlocal done
        while time.perf_counter() < stop:
            response = await client.request(client.message(coap.GET, ""), target)
            assert response.code == coap.CONTENT
            done += 1

    try:
        await asyncio.gather(*(worker() for _ in range(inflight)))
    finally:
        await client.close()
    return done


async def run_aiocoap(target: tuple[str, int], duration: float, inflight: int) -> int:
    import logging

    import aiocoap

    logging.getLogger("coap").setLevel(logging.CRITICAL)
    ctx = await aiocoap.Context.create_client_context()
    uri = f"coap://{target[0]}:{target[1]}/"
    done = 0
    stop = time.perf_counter() + duration

    async def worker() -> None:
        nonlocal done
        while time.perf_counter() < stop:
            msg = aiocoap.Message(code=aiocoap.GET, mtype=aiocoap.CON, uri=uri)
            response = await ctx.request(msg).response
            assert response.code == aiocoap.CONTENT
            done += 1

    try:
        await asyncio.gather(*(worker() for _ in range(inflight)))
    finally:
        await ctx.shutdown()
    return done


def client_main(args: argparse.Namespace) -> None:
    target = (args.host, args.port)
    run = run_aiodisp if args.client == "aiodisp" else run_aiocoap
    cpu0, wall0 = time.process_time(), time.perf_counter()
    done = asyncio.run(run(target, args.duration, args.inflight))
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    print(json.dumps({"done": done, "wall": wall, "cpu": cpu}))


# ---------------------------------------------------------------------- the driver


def measure(client: str, target: tuple[str, int], duration: float, inflight: int
            ) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, __file__, "--client", client, "--host", target[0],
         "--port", str(target[1]), "--duration", str(duration), "--inflight", str(inflight)],
        capture_output=True, text=True, check=True, timeout=duration + 120,
    )
    r = json.loads(out.stdout.strip().splitlines()[-1])
    return {"per_s": r["done"] / r["wall"], "cpu_us": r["cpu"] / max(r["done"], 1) * 1e6,
            "done": r["done"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--client", choices=["aiodisp", "aiocoap"])  # (a client process)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--inflight", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    if args.client:
        client_main(args)
        return
    with tempfile.TemporaryDirectory() as logdir:
        proc, target = start_libcoap(logdir)
        try:
            results: dict[str, list[dict[str, float]]] = {"aiodisp": [], "aiocoap": []}
            for _ in range(args.rounds):
                for client in results:
                    results[client].append(measure(client, target, args.duration,
                                                   args.inflight))
        finally:
            proc.terminate()
            proc.wait()
    summary: dict[str, Any] = {"inflight": args.inflight, "duration": args.duration,
                               "rounds": results}
    print(f"CoAP CON GET / against libcoap, {args.inflight} in flight, "
          f"{args.rounds} rounds of {args.duration:g} s (median):")
    for client, rounds in results.items():
        per_s = statistics.median(r["per_s"] for r in rounds)
        cpu = statistics.median(r["cpu_us"] for r in rounds)
        summary[client] = {"per_s": per_s, "cpu_us": cpu}
        print(f"  {client:8s} {per_s:10,.0f} GET/s   {cpu:7.1f} µs CPU per GET")
    ratio = summary["aiodisp"]["per_s"] / summary["aiocoap"]["per_s"]
    summary["ratio"] = ratio
    print(f"  aiodisp / aiocoap: {ratio:.1f}x")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=2)


if __name__ == "__main__":
    main()
