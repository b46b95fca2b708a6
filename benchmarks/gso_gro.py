"""Prototype, measured before adopting: UDP GSO on send and GRO on receive, from pure Python.

    .venv/bin/python benchmarks/gso_gro.py --renice -20              # ~1 min
    .venv/bin/python benchmarks/gso_gro.py --quick --json -          # seconds-long smoke

A sender process (first core) sends bursts of ``N`` 64-byte datagrams to one
receiver process (the other core) for ``--duration`` seconds, in one of two ways:

* ``sendto``: ``N`` calls of ``sock.sendto(message, addr)``;
* ``gso``: the ``N`` messages joined into one buffer and sent with ONE
  ``sock.sendmsg([buffer], [(SOL_UDP, UDP_SEGMENT, 64)], 0, addr)`` (Linux ≥ 4.18;
  UDP_SEGMENT is option 103 at level SOL_UDP = 17): the kernel cuts it into
  ``N`` datagrams of 64 bytes.

The receiver reads them in one of two ways:

* ``recv``: one ``sock.recv(2048)`` per datagram (a bytes object each);
* ``gro``: the socket has ``UDP_GRO`` (option 104) on, and each
  ``sock.recvmsg(65535, CMSG_SPACE(4))`` may return several datagrams of one
  burst glued together, with a ``(SOL_UDP, UDP_GRO, segment size)`` control
  message; the receiver slices the buffer back into datagrams (bytes objects,
  as ``recv`` gives), so both hand the application the same thing.

Both processes are plain blocking loops, no event loop: this measures what the
system calls cost per datagram, the ceiling of what a library could gain. The
sender reports datagrams/s and its CPU per datagram; the receiver what it got,
its CPU per datagram and how many system calls it made for them. Note that on
loopback the kernel delivers a datagram into the receiver's socket from the
sender's system call, so the receive path's kernel work is charged to the
sender. Cases alternate in every round.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import struct
import subprocess
import sys
import threading
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import common  # noqa: E402
import harness  # noqa: E402

SOL_UDP = 17
UDP_SEGMENT = 103
UDP_GRO = 104
SIZE = 64
BUFFER = 4 << 20
CASES = (("sendto", "recv"), ("gso", "recv"), ("gso", "gro"), ("sendto", "gro"))


def _socket(bind: bool) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, BUFFER)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, BUFFER)
    if bind:
        sock.bind(("127.0.0.1", 0))
    return sock


def receiver(mode: str) -> dict[str, Any]:
    sock = _socket(True)
    if mode == "gro":
        sock.setsockopt(SOL_UDP, UDP_GRO, 1)
    sock.settimeout(0.1)
    sys.stdout.write(json.dumps(sock.getsockname()) + "\n")
    sys.stdout.flush()
    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
    datagrams = calls = bundles = 0
    cpu0 = None
    last = 0.0
    recv, recvmsg = sock.recv, sock.recvmsg
    space = socket.CMSG_SPACE(4)
    unpack = struct.Struct("=i").unpack
    sink: list[bytes] = []
    while not stop.is_set():
        try:
            if mode == "recv":
                sink.append(recv(2048))
                datagrams += 1
            else:
                data, anc, _flags, _addr = recvmsg(65535, space)
                seg = len(data)
                for level, kind, value in anc:
                    if level == SOL_UDP and kind == UDP_GRO:
                        (seg,) = unpack(value[:4])
                if seg < len(data):
                    bundles += 1
                    sink.extend(data[i:i + seg] for i in range(0, len(data), seg))
                    datagrams += -(-len(data) // seg)
                else:
                    sink.append(data)
                    datagrams += 1
            calls += 1
            if cpu0 is None:
                cpu0 = time.process_time()
            last = time.process_time()
            if len(sink) > 4096:
                sink.clear()
        except TimeoutError:
            continue
    cpu = last - cpu0 if cpu0 is not None else 0.0
    return {"datagrams": datagrams, "calls": calls, "glued": bundles, "cpu_s": cpu,
            "cpu_us_per_datagram": cpu / max(1, datagrams) * 1e6}


def sender(mode: str, burst: int, target: tuple[str, int], duration: float,
           warmup: float) -> dict[str, Any]:
    sock = _socket(False)
    sendto, sendmsg = sock.sendto, sock.sendmsg
    cmsg = [(SOL_UDP, UDP_SEGMENT, struct.pack("=H", SIZE))]
    body = os.urandom(SIZE - 8)
    pack = struct.Struct(">Q").pack
    clock = time.perf_counter
    i = 0

    def run(seconds: float) -> int:
        nonlocal i
        sent = 0
        end = clock() + seconds
        while clock() < end:
            if mode == "sendto":
                for k in range(i, i + burst):
                    sendto(pack(k) + body, target)
            else:
                sendmsg([b"".join([pack(k) + body for k in range(i, i + burst)])], cmsg, 0,
                        target)
            i += burst
            sent += burst
        return sent

    warm = run(warmup)
    cpu0, t0 = time.process_time(), clock()
    sent = run(duration)
    elapsed, cpu = clock() - t0, time.process_time() - cpu0
    return {"sent": sent, "sent_in_all": sent + warm, "datagrams_per_s": sent / elapsed,
            "cpu_us_per_datagram": cpu / max(1, sent) * 1e6,
            "syscalls_per_datagram": 1.0 if mode == "sendto" else 1.0 / burst}


def measure(send: str, recv: str, burst: int, args: argparse.Namespace) -> dict[str, Any]:
    me = os.path.abspath(__file__)
    rcpu = None if args.no_pin else common.server_core()
    scpu = None if args.no_pin else common.client_core()
    proc = subprocess.Popen([sys.executable, me, "--role", json.dumps(
        {"role": "receiver", "mode": recv, "cpu": rcpu})], stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, text=True, env=harness._env())
    assert proc.stdin is not None and proc.stdout is not None
    try:
        target = json.loads(proc.stdout.readline())
        out = subprocess.run([sys.executable, me, "--role", json.dumps(
            {"role": "sender", "mode": send, "burst": burst, "target": target, "cpu": scpu,
             "duration": args.duration, "warmup": args.warmup})],
            capture_output=True, text=True, env=harness._env(), timeout=args.duration + 60)
        if out.returncode:
            raise RuntimeError(out.stderr[-2000:])
        result: dict[str, Any] = json.loads(out.stdout.splitlines()[-1])
    finally:
        time.sleep(0.2)
        proc.stdin.close()
        got = json.loads(proc.stdout.read().splitlines()[-1])
        proc.wait(30)
    result["receiver"] = got
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--duration", type=float, default=None, help="seconds per run (1.5)")
    p.add_argument("--warmup", type=float, default=0.2)
    p.add_argument("--rounds", type=int, default=None, help="alternating rounds (3)")
    p.add_argument("--bursts", default=None, help="comma list of N (1,8,32,64)")
    p.add_argument("--no-pin", action="store_true")
    p.add_argument("--renice", type=int, default=None, metavar="N")
    p.add_argument("--json", metavar="PATH")
    p.add_argument("--role", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.role:
        opts = json.loads(args.role)
        common.pin(opts.get("cpu"))
        if opts["role"] == "receiver":
            print(json.dumps(receiver(opts["mode"])))
        else:
            print(json.dumps(sender(opts["mode"], opts["burst"], tuple(opts["target"]),
                                    opts["duration"], opts["warmup"])))
        return 0
    args.duration = args.duration or (0.3 if args.quick else 1.5)
    args.rounds = args.rounds or (1 if args.quick else 3)
    bursts = [int(x) for x in (args.bursts or ("8" if args.quick else "1,8,32,64")).split(",")]
    common.renice(args.renice)
    cases = [(s, r, n) for n in bursts for s, r in CASES if not (n == 1 and s == "gso")]
    runs: dict[tuple[str, str, int], list[dict[str, Any]]] = {c: [] for c in cases}
    started = time.time()
    for rnd in range(args.rounds):
        for case in cases if rnd % 2 == 0 else list(reversed(cases)):
            r = measure(*case, args)
            runs[case].append(r)
            print(f"round {rnd + 1} {case[0]}->{case[2]}x->{case[1]}: "
                  f"{r['datagrams_per_s']:,.0f} datagrams/s sent, {r['cpu_us_per_datagram']:.2f}"
                  f" µs/datagram sender; receiver {r['receiver']['cpu_us_per_datagram']:.2f} µs/"
                  f"datagram, {r['receiver']['datagrams'] / max(1, r['sent_in_all']):.0%} received",
                  file=sys.stderr)
    rows = []
    for (send, recv, n), results in runs.items():
        rows.append({
            "send": send, "receive": recv, "burst": n, "rounds": len(results),
            "datagrams_per_s": common.median([r["datagrams_per_s"] for r in results]),
            "sender_cpu_us_per_datagram": common.median(
                [r["cpu_us_per_datagram"] for r in results]),
            "sender_cpu_range": [min(r["cpu_us_per_datagram"] for r in results),
                                 max(r["cpu_us_per_datagram"] for r in results)],
            "receiver_cpu_us_per_datagram": common.median(
                [r["receiver"]["cpu_us_per_datagram"] for r in results]),
            "receiver_calls_per_datagram": common.median(
                [r["receiver"]["calls"] / max(1, r["receiver"]["datagrams"]) for r in results]),
            "received_share": common.median(
                [r["receiver"]["datagrams"] / max(1, r["sent_in_all"]) for r in results]),
            "per_round": results,
        })
    base = {(r["burst"]): r for r in rows if (r["send"], r["receive"]) == ("sendto", "recv")}
    print("\n| N | send | receive | datagrams/s sent | sender CPU µs/datagram (range) "
          "| N sendto's CPU / this | receiver CPU µs/datagram | receive calls/datagram "
          "| received |",
          file=sys.stderr)
    print("|---:|---|---|---:|---:|---:|---:|---:|---:|", file=sys.stderr)
    for r in rows:
        b = base.get(r["burst"])
        r["sender_cpu_vs_sendto"] = (b["sender_cpu_us_per_datagram"]
                                     / r["sender_cpu_us_per_datagram"]) if b else None
        vs = f"{r['sender_cpu_vs_sendto']:.2f}x" if b else "-"
        lo, hi = r["sender_cpu_range"]
        print(f"| {r['burst']} | {r['send']} | {r['receive']} | {r['datagrams_per_s']:,.0f} | "
              f"{r['sender_cpu_us_per_datagram']:.2f} ({lo:.2f}-{hi:.2f}) | {vs} | "
              f"{r['receiver_cpu_us_per_datagram']:.2f} | "
              f"{r['receiver_calls_per_datagram']:.3f} | {r['received_share']:.0%} |",
              file=sys.stderr)
    meta = {"date": time.strftime("%Y-%m-%d %H:%M:%S"), "seconds": round(time.time() - started, 1),
            "python": platform.python_version(), "kernel": platform.release(),
            "load_average_after": os.getloadavg(), "duration": args.duration,
            "rounds": args.rounds, "size": SIZE, "argv": sys.argv[1:] if argv is None else argv,
            **harness.source_version()}
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
