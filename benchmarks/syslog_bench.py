"""Syslog lines/s over UDP: aiodisp's send_nowait vs the stdlib's SysLogHandler.

A receiver process counts the datagrams it reads on a loopback UDP port (with a
large receive buffer; it reports how many arrived). Each sender, in its own
process and alternately, sends ``--count`` RFC 3164 lines to it and reports
lines/s and CPU per line:

* ``aiodisp``: ``d.send_nowait(line, addr)`` from plain code, raw framing, an
  adapter that prefixes the priority (``<14>``: user.info) and encodes;
* ``stdlib-emit``: ``SysLogHandler.emit(record)`` of a prebuilt LogRecord (the
  handler alone: format, prefix, encode, ``socket.sendto``);
* ``stdlib-logger``: ``logger.info(line)`` through a logger whose one handler is
  a SysLogHandler (what an application pays).

When the sender outruns the socket (``TransportError``: its send queue is
full), aiodisp's sender waits for room (``await wait_writable()``) and counts
it; the stdlib's blocking socket simply blocks.

    .venv/bin/python benchmarks/syslog_bench.py
    .venv/bin/python benchmarks/syslog_bench.py --count 500000 --rounds 5 --json syslog.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import logging.handlers
import os
import socket
import statistics
import subprocess
import sys
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
LINE = "aiodisp-bench: request served in 1.234 ms from 127.0.0.1 status=200"


def receiver_main(port_file: str, stop_file: str) -> None:
    """Count datagrams until ``stop_file`` appears; print the count."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 << 20)
    s.bind(("127.0.0.1", 0))
    s.settimeout(0.2)
    with open(port_file, "w") as f:
        f.write(str(s.getsockname()[1]))
    n = 0
    while True:
        try:
            s.recv(2048)
            n += 1
        except TimeoutError:
            if os.path.exists(stop_file):
                break
    print(n)


class SyslogAdapter:
    """Send-only: a message is a line of text; the datagram is ``<14>`` + the line."""

    def msg_to_raw(self, msg: str) -> bytes:
        return b"<14>" + msg.encode()

    def raw_to_msg(self, raw: bytes) -> str:
        return raw.decode(errors="replace")

    def msg_key(self, msg: str) -> None:
        return None


async def send_aiodisp(addr: tuple[str, int], count: int) -> tuple[float, float, int]:
    sys.path.insert(0, os.path.join(ROOT, "src"))
    import aiodisp

    d = await aiodisp.open_udp(SyslogAdapter(), ("127.0.0.1", 0), framing="raw")
    send = d.send_nowait
    waits = 0
    cpu, wall = time.process_time(), time.perf_counter()
    i = 0
    while i < count:
        try:
            send(LINE, addr)
            i += 1
        except aiodisp.TransportError:
            waits += 1
            await d.transport.wait_writable()
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    await d.close()
    return wall, cpu, waits


def send_stdlib(addr: tuple[str, int], count: int, through_logger: bool
                ) -> tuple[float, float, int]:
    handler = logging.handlers.SysLogHandler(address=addr)
    logger = logging.getLogger("bench")
    logger.propagate = False
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    record = logger.makeRecord("bench", logging.INFO, __file__, 0, LINE, None, None)
    cpu, wall = time.process_time(), time.perf_counter()
    if through_logger:
        info = logger.info
        for _ in range(count):
            info(LINE)
    else:
        emit = handler.emit
        for _ in range(count):
            emit(record)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    handler.close()
    return wall, cpu, 0


def sender_main(args: argparse.Namespace) -> None:
    addr = ("127.0.0.1", args.port)
    if args.sender == "aiodisp":
        wall, cpu, waits = asyncio.run(send_aiodisp(addr, args.count))
    else:
        wall, cpu, waits = send_stdlib(addr, args.count, args.sender == "stdlib-logger")
    print(json.dumps({"wall": wall, "cpu": cpu, "waits": waits}))


SENDERS = ("aiodisp", "stdlib-emit", "stdlib-logger")


def measure(sender: str, count: int, tmp: str) -> dict[str, float]:
    port_file, stop_file = os.path.join(tmp, "port"), os.path.join(tmp, "stop")
    for f in (port_file, stop_file):
        if os.path.exists(f):
            os.unlink(f)
    receiver = subprocess.Popen([sys.executable, __file__, "--receive", port_file, stop_file],
                                stdout=subprocess.PIPE, text=True)
    port = 0
    while not port:
        time.sleep(0.01)
        if os.path.exists(port_file):
            with open(port_file) as f:
                port = int(f.read() or 0)
    out = subprocess.run([sys.executable, __file__, "--sender", sender, "--port", str(port),
                          "--count", str(count)], capture_output=True, text=True, check=True,
                         timeout=600)
    open(stop_file, "w").close()
    received = int(receiver.communicate(timeout=60)[0])
    r = json.loads(out.stdout.strip().splitlines()[-1])
    return {"per_s": count / r["wall"], "cpu_us": r["cpu"] / count * 1e6,
            "received": received / count, "waits": r["waits"]}


def main() -> None:
    import tempfile

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sender", choices=SENDERS)  # (a sender process)
    parser.add_argument("--receive", nargs=2, metavar=("PORT_FILE", "STOP_FILE"))
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--count", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    if args.receive:
        receiver_main(*args.receive)
        return
    if args.sender:
        sender_main(args)
        return
    results: dict[str, list[dict[str, float]]] = {s: [] for s in SENDERS}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.rounds):
            for sender in SENDERS:
                results[sender].append(measure(sender, args.count, tmp))
    summary: dict[str, Any] = {"count": args.count, "rounds": results}
    print(f"{args.count:,} syslog lines to a loopback UDP receiver, {args.rounds} rounds "
          "(median):")
    for sender, rounds in results.items():
        per_s = statistics.median(r["per_s"] for r in rounds)
        cpu = statistics.median(r["cpu_us"] for r in rounds)
        got = min(r["received"] for r in rounds)
        summary[sender] = {"per_s": per_s, "cpu_us": cpu, "received_min": got}
        print(f"  {sender:14s} {per_s:10,.0f} lines/s   {cpu:6.2f} µs CPU per line   "
              f"received >= {got:.1%}")
    for other in SENDERS[1:]:
        ratio = summary["aiodisp"]["per_s"] / summary[other]["per_s"]
        summary[f"ratio_vs_{other}"] = ratio
        print(f"  aiodisp / {other}: {ratio:.2f}x")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=2)


if __name__ == "__main__":
    main()
