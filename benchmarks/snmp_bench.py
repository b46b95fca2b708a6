"""1,000 SNMPv2c GETs against net-snmp's agent: aiodisp (examples/snmp_get.py) vs pysnmp.

An ``snmpd`` runs in the foreground on a free loopback port from a config written
to a tmp dir. Each client, in its own process and alternately, sends ``--count``
GETs of sysName.0 with ``--inflight`` of them in flight at once over one socket
(aiodisp: one dispatcher; pysnmp 7: one SnmpEngine and one UdpTransportTarget),
and reports the wall time and CPU time of those GETs (after one GET that
finishes each client's set-up). The median of the
rounds is printed (and written as JSON with ``--json``).

    .venv/bin/python benchmarks/snmp_bench.py
    .venv/bin/python benchmarks/snmp_bench.py --inflight 1 --rounds 3    # one at a time

Needs snmpd (Debian) and pysnmp (``pip install -e '.[bench]'``).
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
SYS_NAME = "1.3.6.1.2.1.1.5.0"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def start_snmpd(workdir: str) -> tuple[subprocess.Popen[bytes], tuple[str, int]]:
    exe = shutil.which("snmpd") or ("/usr/sbin/snmpd" if os.path.exists("/usr/sbin/snmpd")
                                    else None)
    if exe is None:
        raise SystemExit("snmpd is not installed (Debian: snmpd)")
    conf = os.path.join(workdir, "snmpd.conf")
    with open(conf, "w") as f:
        f.write("rocommunity public 127.0.0.1\nsysName aiodisp-bench\n")
    port = free_port()
    log = open(os.path.join(workdir, "snmpd.log"), "wb")  # noqa: SIM115
    env = {**os.environ, "SNMP_PERSISTENT_DIR": workdir, "MIBS": ""}
    proc = subprocess.Popen(
        [exe, "-f", "-Lo", "-C", "-c", conf, "-p", os.path.join(workdir, "pid"),
         f"udp:127.0.0.1:{port}"],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, cwd=workdir,
    )
    time.sleep(1.0)
    return proc, ("127.0.0.1", port)


# ---------------------------------------------------------------------- the clients


async def run_aiodisp(target: tuple[str, int], count: int, inflight: int
                      ) -> tuple[int, float, float]:
    sys.path.insert(0, os.path.join(ROOT, "examples"))
    import snmp_get

    import aiodisp

    retry = aiodisp.RetryPolicy(initial_timeout=1.0, max_attempts=3)
    client = await snmp_get.SnmpClient.open(("127.0.0.1", 0), retry=retry, timeout=10.0)
    left = count
    ok = 0

    async def worker() -> None:
        nonlocal left, ok
        while left > 0:
            left -= 1
            (value,) = await client.get(target, [SYS_NAME])
            ok += value.value == b"aiodisp-bench"

    await client.get(target, [SYS_NAME])  # (set-up done: the socket is open)
    try:
        cpu, wall = time.process_time(), time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(inflight)))
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    finally:
        await client.close()
    return ok, wall, cpu


async def run_pysnmp(target: tuple[str, int], count: int, inflight: int
                     ) -> tuple[int, float, float]:
    from pysnmp.hlapi.v3arch.asyncio import (
        CommunityData,
        ContextData,
        ObjectIdentity,
        ObjectType,
        SnmpEngine,
        UdpTransportTarget,
        get_cmd,
    )

    engine = SnmpEngine()
    transport = await UdpTransportTarget.create(target, timeout=1.0, retries=2)
    community = CommunityData("public", mpModel=1)  # v2c
    context = ContextData()
    left = count
    ok = 0

    async def worker() -> None:
        nonlocal left, ok
        while left > 0:
            left -= 1
            error, status, _index, binds = await get_cmd(
                engine, community, transport, context, ObjectType(ObjectIdentity(SYS_NAME))
            )
            ok += not error and not status and str(binds[0][1]) == "aiodisp-bench"

    await get_cmd(engine, community, transport, context, ObjectType(ObjectIdentity(SYS_NAME)))
    try:
        cpu, wall = time.process_time(), time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(inflight)))
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    finally:
        engine.close_dispatcher()
    return ok, wall, cpu


def client_main(args: argparse.Namespace) -> None:
    target = (args.host, args.port)
    run = run_aiodisp if args.client == "aiodisp" else run_pysnmp
    ok, wall, cpu = asyncio.run(run(target, args.count, args.inflight))
    print(json.dumps({"ok": ok, "wall": wall, "cpu": cpu}))


# ---------------------------------------------------------------------- the driver


def measure(client: str, target: tuple[str, int], count: int, inflight: int
            ) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, __file__, "--client", client, "--host", target[0],
         "--port", str(target[1]), "--count", str(count), "--inflight", str(inflight)],
        capture_output=True, text=True, check=True, timeout=600,
    )
    r: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    if r["ok"] != count:
        raise SystemExit(f"{client}: {r['ok']} of {count} GETs answered correctly")
    return r


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--client", choices=["aiodisp", "pysnmp"])  # (a client process)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--inflight", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    if args.client:
        client_main(args)
        return
    with tempfile.TemporaryDirectory() as workdir:
        proc, target = start_snmpd(workdir)
        try:
            results: dict[str, list[dict[str, float]]] = {"aiodisp": [], "pysnmp": []}
            for _ in range(args.rounds):
                for client in results:
                    results[client].append(measure(client, target, args.count, args.inflight))
        finally:
            proc.terminate()
            proc.wait()
    summary: dict[str, Any] = {"count": args.count, "inflight": args.inflight, "rounds": results}
    print(f"{args.count} SNMPv2c GETs of sysName.0 against snmpd, {args.inflight} in flight, "
          f"{args.rounds} rounds (median):")
    for client, rounds in results.items():
        wall = statistics.median(r["wall"] for r in rounds)
        cpu = statistics.median(r["cpu"] for r in rounds)
        summary[client] = {"wall": wall, "cpu": cpu}
        print(f"  {client:8s} {wall:7.3f} s  ({args.count / wall:8,.0f} GET/s)   "
              f"{cpu / args.count * 1e6:7.1f} µs CPU per GET")
    ratio = summary["pysnmp"]["wall"] / summary["aiodisp"]["wall"]
    summary["ratio"] = ratio
    print(f"  aiodisp is {ratio:.1f}x as fast")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=2)


if __name__ == "__main__":
    main()
