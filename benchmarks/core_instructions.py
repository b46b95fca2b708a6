"""Instructions per request/reply cycle through the sans-I/O core, counted by callgrind.

Instruction counts do not care how busy the machine is, so this is the figure
to compare before and after a change to the hot path:

    .venv/bin/python benchmarks/core_instructions.py            # ack and raw
    .venv/bin/python benchmarks/core_instructions.py --framing raw

Each framing runs the cycle (``Endpoint.start_request`` of an ``IdMessage``, then
``Endpoint.receive`` of its reply, 256 in flight) under ``valgrind --tool=callgrind``
twice, with 2,000 and 12,000 cycles; the difference over 10,000 is the cost of
one cycle, less the harness's own (measured the same way with the core calls
left out). Needs valgrind (Debian package valgrind).
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "src"))


def cycle(framing: str, count: int) -> None:
    from aiodisp._core.endpoint import Endpoint
    from aiodisp.adapters import IdMessage, IdPrefixAdapter

    core = Endpoint(IdPrefixAdapter(), framing="raw" if framing == "base" else framing)
    peer = ("127.0.0.1", 5000)
    body = b"x" * 64
    offset = 8 if framing == "ack" else 0
    in_flight: collections.deque[bytes] = collections.deque()
    messages = [IdMessage(i, body) for i in range(count)]
    template = IdPrefixAdapter().msg_to_raw(messages[0])
    now = 0.0

    def reply_to(frame: bytes) -> bytes:
        buf = bytearray(frame)
        buf[offset] |= 0x80
        return bytes(buf)

    for i in range(count):
        now += 1e-5
        if framing == "base":  # the harness alone
            in_flight.append(reply_to(template))
            if len(in_flight) > 256:
                in_flight.popleft()
            continue
        p = core.start_request(messages[i], peer, None, now, 1.0, None)
        assert p.frame is not None
        in_flight.append(reply_to(p.frame))
        if len(in_flight) > 256:
            core.receive(in_flight.popleft(), peer, now)


def instructions(framing: str, count: int) -> int:
    out = subprocess.run(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
         sys.executable, __file__, "--run", framing, str(count)],
        capture_output=True, text=True, check=True,
    ).stderr
    match = re.search(r"refs:\s+([\d,]+)", out)
    if match is None:
        raise RuntimeError("callgrind printed no instruction count:\n" + out)
    return int(match.group(1).replace(",", ""))


def per_cycle(framing: str) -> int:
    return (instructions(framing, 12_000) - instructions(framing, 2_000)) // 10_000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--framing", choices=["ack", "raw"], action="append")
    parser.add_argument("--run", nargs=2, metavar=("FRAMING", "COUNT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run:
        cycle(args.run[0], int(args.run[1]))
        return 0
    if shutil.which("valgrind") is None:
        print("needs valgrind (apt-get install valgrind)", file=sys.stderr)
        return 2
    base = per_cycle("base")
    for framing in args.framing or ["ack", "raw"]:
        total = per_cycle(framing)
        print(f"{framing}: {total - base:,} instructions per request/reply cycle "
              f"(harness {base:,} subtracted)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
