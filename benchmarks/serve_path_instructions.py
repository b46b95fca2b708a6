"""Instructions per query of the inline server's direct receiver alone, by callgrind.

``dnsperf_serving.py --callgrind`` counts a whole responder under load: the
loop, the reads, the kernel's share of user space. This counts only what one
datagram costs once it is read, by calling a receive function in a loop
(2,000 and 12,000 times under ``valgrind --tool=callgrind``; the difference over
10,000), for three receivers of the same DNS query, each sending the same
answer to a real loopback socket:

* ``bare``: ``sendto(answer(data), addr)``, the hand-rolled responder's body;
* ``adapter``: the same with the adapter's ``raw_to_msg``, ``is_reply`` and
  ``msg_to_raw`` and the handler's frame called by hand, as the direct
  receiver calls them (what a user's adapter costs, not aiodisp);
* ``aiodisp``: the direct receiver of ``Dispatcher.serve()`` (raw framing, a
  plain handler), as ``benchmarks/dnsperf_serving.py`` runs it.

``aiodisp`` less ``adapter`` is the receiver's own work per query.

    .venv/bin/python benchmarks/serve_path_instructions.py [--loop uvloop]

Needs valgrind (Debian package valgrind).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import dns_zone  # noqa: E402
import dnsperf_serving  # noqa: E402

RECEIVERS = ("bare", "adapter", "aiodisp")
SHORT, LONG = 2_000, 12_000


async def _calls(receiver: str, n: int) -> None:
    """Call ``receiver``'s receive function ``n`` times with one query."""
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    sink.bind(("127.0.0.1", 0))  # (under callgrind its queue fills: the kernel drops the rest)
    addr = sink.getsockname()
    query = dns_zone.wire_query(77, "host-5." + dns_zone.ORIGIN)
    answer = dns_zone.answer
    closing: Callable[[], Any] | None = None
    receive: Callable[[bytes, Any], None]
    if receiver == "aiodisp":
        import aiodisp

        d = await aiodisp.open_udp(dnsperf_serving.DnsWire(), ("127.0.0.1", 0), framing="raw")
        serving = asyncio.ensure_future(d.serve(dnsperf_serving.handle))
        await asyncio.sleep(0.01)
        assert d._direct is not None, "serve() did not install its direct receiver"
        receive = d._direct

        async def close() -> None:
            assert d.stats.notifies >= n, d.stats
            await d.close()
            await serving

        closing = close
    else:
        sock = dnsperf_serving._socket()
        sendto = sock.sendto
        if receiver == "bare":

            def receive(data: bytes, peer: Any) -> None:
                reply = answer(data)
                if reply is not None:
                    sendto(reply, peer)
        else:
            wire = dnsperf_serving.DnsWire()
            raw_to_msg, is_reply, msg_to_raw = wire.raw_to_msg, wire.is_reply, wire.msg_to_raw
            handle = dnsperf_serving.handle

            def receive(data: bytes, peer: Any) -> None:
                msg = raw_to_msg(data)
                if is_reply(msg):
                    return
                reply = handle(msg, peer)
                if reply is not None:
                    sendto(msg_to_raw(reply), peer)
    for _ in range(n):
        receive(query, addr)
    if closing is not None:
        await closing()
    answers = _answers(sink, answer(query))
    sink.close()
    print(f"{receiver}: {n} queries, {answers} answers read back")


def _answers(sink: socket.socket, expected: bytes | None) -> int:
    """How many correct answers wait in ``sink`` (all of them, for a small ``n``)."""
    sink.setblocking(False)
    count = 0
    while True:
        try:
            data = sink.recv(4096)
        except BlockingIOError:
            return count
        assert data == expected, (data, expected)
        count += 1


def _count(receiver: str, n: int, loop: str) -> int:
    proc = subprocess.run(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable,
         os.path.abspath(__file__), "--run", receiver, "--n", str(n), "--loop", loop],
        capture_output=True, text=True, check=True,
    )
    found = re.search(r"Collected\s*:\s*([\d,]+)", proc.stderr) or re.search(
        r"refs:\s*([\d,]+)", proc.stderr)
    if found is None:
        raise RuntimeError(f"callgrind printed no instruction count:\n{proc.stderr}")
    return int(found.group(1).replace(",", ""))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio")
    parser.add_argument("--receivers", default=",".join(RECEIVERS))
    parser.add_argument("--run", help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, default=SHORT, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.loop == "uvloop":
        import uvloop

        uvloop.install()
    if args.run:
        asyncio.run(_calls(args.run, args.n))
        return 0
    if shutil.which("valgrind") is None:
        print("needs valgrind (apt-get install valgrind)", file=sys.stderr)
        return 2
    per: dict[str, int] = {}
    for receiver in args.receivers.split(","):
        per[receiver] = (_count(receiver, LONG, args.loop) - _count(receiver, SHORT, args.loop)
                         ) // (LONG - SHORT)
        print(f"{args.loop} {receiver}: {per[receiver]:,} instructions per query", flush=True)
    if "aiodisp" in per and "adapter" in per:
        print(f"the direct receiver's own work: {per['aiodisp'] - per['adapter']:,} per query")
    return 0


if __name__ == "__main__":
    sys.exit(main())
