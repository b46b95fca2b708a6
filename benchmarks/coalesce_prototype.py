"""Prototype, measured before adopting: K messages per datagram, end to end, in pure Python.

    .venv/bin/python benchmarks/coalesce_prototype.py --renice -20        # ~1 min
    .venv/bin/python benchmarks/coalesce_prototype.py --quick --json -    # smoke

What ``coalesce=True`` can gain at most, with the per-message work kept as
small as Python allows: a client keeps 256 requests (the 72-byte messages of
the other benchmarks) in flight against an echo server, both hand-rolled on
non-blocking sockets read through ``loop.add_reader`` and drained per wake-up,
each pinned to its own core. Requests and replies travel ``K`` to a datagram
in a simple bundle: each message behind a 2-byte big-endian length. The
server parses a bundle, answers every message in it (sets the reply flag) and
sends the ``K`` replies back as one bundle; the client matches every reply to
its pending request (a dict), and for every ``K`` replies sends one bundle of
``K`` new requests. ``plain`` is one message per datagram without any length
prefix (what every peer does today). The gain at ``K`` is messages/s at ``K``
over ``plain``, alternately measured; so is the CPU per message on each side.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import struct
import subprocess
import sys
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import common  # noqa: E402
import harness  # noqa: E402

IN_FLIGHT = 256
BUFFER = 4 << 20
_LEN = struct.Struct(">H")
_WORD = common.WORD
REPLY_BIT = common.REPLY_BIT


def bundle(messages: list[bytes]) -> bytes:
    """``K`` messages as one datagram: each behind its 2-byte big-endian length."""
    pack = _LEN.pack
    return b"".join([pack(len(m)) + m for m in messages])


def unbundle(data: bytes) -> list[bytes]:
    """The messages of a bundle (a truncated one stops at its last whole message)."""
    out = []
    unpack = _LEN.unpack_from
    pos, end = 0, len(data)
    while pos + 2 <= end:
        (n,) = unpack(data, pos)
        pos += 2
        if pos + n > end:
            break
        out.append(data[pos:pos + n])
        pos += n
    return out


def _socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, BUFFER)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, BUFFER)
    sock.bind(("127.0.0.1", 0))
    return sock


def _reply(msg: bytes) -> bytes:
    (word,) = _WORD.unpack_from(msg)
    return _WORD.pack(word | REPLY_BIT) + msg[8:]


async def serve() -> None:
    """Two sockets: ``plain`` (one message a datagram) and ``bundle``; until stdin closes."""
    loop = asyncio.get_running_loop()
    stop: asyncio.Future[None] = loop.create_future()
    plain, bundled = _socket(), _socket()
    unpack, pack = _WORD.unpack_from, _WORD.pack

    def drain_plain() -> None:
        recvfrom, sendto = plain.recvfrom, plain.sendto
        while True:
            try:
                data, peer = recvfrom(65536)
            except (BlockingIOError, InterruptedError):
                return
            (word,) = unpack(data)
            sendto(pack(word | REPLY_BIT) + data[8:], peer)

    def drain_bundled() -> None:
        recvfrom, sendto = bundled.recvfrom, bundled.sendto
        while True:
            try:
                data, peer = recvfrom(65536)
            except (BlockingIOError, InterruptedError):
                return
            sendto(bundle([_reply(m) for m in unbundle(data)]), peer)

    def on_stdin() -> None:
        if not os.read(0, 4096) and not stop.done():
            stop.set_result(None)

    loop.add_reader(plain.fileno(), drain_plain)
    loop.add_reader(bundled.fileno(), drain_bundled)
    loop.add_reader(0, on_stdin)
    print(json.dumps({"plain": plain.getsockname(), "bundle": bundled.getsockname()}), flush=True)
    await stop


async def client(target: tuple[str, int], k: int, duration: float,
                 warmup: float) -> dict[str, Any]:
    """Keep IN_FLIGHT requests going, ``k`` per datagram (0: plain), for ``duration`` s."""
    loop = asyncio.get_running_loop()
    sock = _socket()
    recv, sendto = sock.recv, sock.sendto
    body = os.urandom(common.PAYLOAD)
    pack, unpack = _WORD.pack, _WORD.unpack_from
    pending: dict[int, bytes] = {}
    state = {"next": 1, "done": 0, "wrong": 0, "freed": 0, "datagrams": 0}
    group = max(1, k)

    def send_group() -> None:
        i = state["next"]
        state["next"] = i + group
        msgs = []
        for ident in range(i, i + group):
            msg = pack(ident) + body
            pending[ident] = msg
            msgs.append(msg)
        sendto(bundle(msgs) if k else msgs[0], target)

    def on_reply(msg: bytes) -> None:
        (word,) = unpack(msg)
        sent = pending.pop(word & ~REPLY_BIT, None)
        if sent is None or not word & REPLY_BIT or msg[8:] != sent[8:]:
            state["wrong"] += 1
        state["done"] += 1

    def drain() -> None:
        freed = state["freed"]
        while True:
            try:
                data = recv(65536)
            except (BlockingIOError, InterruptedError):
                break
            state["datagrams"] += 1
            if k:
                replies = unbundle(data)
                for msg in replies:
                    on_reply(msg)
                freed += len(replies)
            else:
                on_reply(data)
                freed += 1
            while freed >= group:
                send_group()
                freed -= group
        state["freed"] = freed

    loop.add_reader(sock.fileno(), drain)
    for _ in range(IN_FLIGHT // group):
        send_group()
    await asyncio.sleep(warmup)
    done0, dg0 = state["done"], state["datagrams"]
    cpu0, t0 = time.process_time(), time.perf_counter()
    await asyncio.sleep(duration)
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    done, dgrams = state["done"] - done0, state["datagrams"] - dg0
    loop.remove_reader(sock.fileno())
    sock.close()
    return {"messages": done, "messages_in_all": state["done"], "messages_per_s": done / elapsed,
            "client_cpu_us_per_message": cpu / max(1, done) * 1e6,
            "replies_per_datagram": done / max(1, dgrams), "wrong": state["wrong"]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--duration", type=float, default=None, help="seconds per run (2)")
    p.add_argument("--warmup", type=float, default=0.3)
    p.add_argument("--rounds", type=int, default=None, help="alternating rounds (3)")
    p.add_argument("--ks", default=None, help="comma list of K (plain,1,2,4,8,16)")
    p.add_argument("--loop", choices=common.LOOPS, default="uvloop")
    p.add_argument("--no-pin", action="store_true")
    p.add_argument("--renice", type=int, default=None, metavar="N")
    p.add_argument("--json", metavar="PATH")
    p.add_argument("--role", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.role:
        opts = json.loads(args.role)
        common.pin(opts.get("cpu"))
        if opts["role"] == "server":
            common.run_on(opts["loop"], serve())
        else:
            print(json.dumps(common.run_on(opts["loop"], client(
                tuple(opts["target"]), opts["k"], opts["duration"], opts["warmup"]))))
        return 0
    args.duration = args.duration or (0.3 if args.quick else 2.0)
    args.rounds = args.rounds or (1 if args.quick else 3)
    ks = [0 if x == "plain" else int(x) for x in
          (args.ks or ("plain,1,8" if args.quick else "plain,1,2,4,8,16")).split(",")]
    common.renice(args.renice)
    me = os.path.abspath(__file__)
    scpu = None if args.no_pin else common.server_core()
    ccpu = None if args.no_pin else common.client_core()
    server = subprocess.Popen([sys.executable, me, "--role", json.dumps(
        {"role": "server", "loop": args.loop, "cpu": scpu})], stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, text=True, env=harness._env())
    assert server.stdin is not None and server.stdout is not None
    runs: dict[int, list[dict[str, Any]]] = {k: [] for k in ks}
    started = time.time()
    try:
        addrs = json.loads(server.stdout.readline())
        for rnd in range(args.rounds):
            for k in ks if rnd % 2 == 0 else list(reversed(ks)):
                target = addrs["bundle" if k else "plain"]
                cpu0 = common.process_cpu(server.pid)
                out = subprocess.run([sys.executable, me, "--role", json.dumps(
                    {"role": "client", "loop": args.loop, "cpu": ccpu, "target": target, "k": k,
                     "duration": args.duration, "warmup": args.warmup})],
                    capture_output=True, text=True, env=harness._env(),
                    timeout=args.duration + 60)
                if out.returncode:
                    raise RuntimeError(out.stderr[-2000:])
                r = json.loads(out.stdout.splitlines()[-1])
                # the server's CPU over the whole client run, per message answered in it
                r["server_cpu_us_per_message"] = ((common.process_cpu(server.pid) - cpu0)
                                                  / max(1, r["messages_in_all"]) * 1e6)
                runs[k].append(r)
                print(f"round {rnd + 1} K={k or 'plain'}: {r['messages_per_s']:,.0f} messages/s,"
                      f" client {r['client_cpu_us_per_message']:.2f} µs/message, server "
                      f"{r['server_cpu_us_per_message']:.2f}, {r['wrong']} wrong", file=sys.stderr)
    finally:
        server.stdin.close()
        server.wait(30)
    rows = []
    for k, results in runs.items():
        gains = [r["messages_per_s"] / b["messages_per_s"]
                 for r, b in zip(results, runs[ks[0]], strict=True)]
        rows.append({
            "k": k or "plain", "rounds": len(results),
            "messages_per_s": common.median([r["messages_per_s"] for r in results]),
            "gain": common.median(gains), "gain_range": [min(gains), max(gains)],
            "client_cpu_us_per_message": common.median(
                [r["client_cpu_us_per_message"] for r in results]),
            "server_cpu_us_per_message": common.median(
                [r["server_cpu_us_per_message"] for r in results]),
            "replies_per_datagram": common.median([r["replies_per_datagram"] for r in results]),
            "wrong": sum(r["wrong"] for r in results), "per_round": results,
        })
    print(f"\n| K | messages/s | vs {ks[0] or 'plain'} (range) | client CPU µs/message "
          "| server CPU µs/message | replies per datagram |", file=sys.stderr)
    print("|---|---:|---:|---:|---:|---:|", file=sys.stderr)
    for r in rows:
        print(f"| {r['k']} | {r['messages_per_s']:,.0f} | {r['gain']:.2f}x "
              f"({r['gain_range'][0]:.2f}-{r['gain_range'][1]:.2f}) | "
              f"{r['client_cpu_us_per_message']:.2f} | {r['server_cpu_us_per_message']:.2f} | "
              f"{r['replies_per_datagram']:.1f} |", file=sys.stderr)
    meta = {"date": time.strftime("%Y-%m-%d %H:%M:%S"), "seconds": round(time.time() - started, 1),
            "python": platform.python_version(), "loop": args.loop, "in_flight": IN_FLIGHT,
            "payload": common.PAYLOAD, "load_average_after": os.getloadavg(),
            "duration": args.duration, "rounds": args.rounds,
            "argv": sys.argv[1:] if argv is None else argv, **harness.source_version()}
    if args.json:
        text = json.dumps({"meta": meta, "results": rows}, indent=1)
        if args.json == "-":
            print(text)
        else:
            with open(args.json, "w") as f:
                f.write(text + "\n")
    return 1 if any(r["wrong"] for r in rows) else 0


if __name__ == "__main__":
    raise SystemExit(main())
