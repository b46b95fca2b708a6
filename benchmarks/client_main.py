"""One client measurement in its own process: ``python client_main.py '<json options>'``.

Options: ``peer``, ``variant``, ``loop``, ``target`` ([host, port]), ``in_flight``,
``duration``, ``warmup``, ``timeout``, ``cpu`` (core to pin to, or null),
``sockbuf`` (socket buffer bytes for the client's UDP sockets; 0: the OS default),
``sockets`` (client sockets to spread the requests over; default 1), ``gc``
(``"off"`` or ``"freeze"``: a diagnostic of the cyclic garbage collector's share).
Prints the
:class:`common.Measurement` as one JSON line.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import sys
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common
import peers


async def measure(opts: dict[str, Any]) -> common.Measurement:
    peer = peers.load(opts["peer"])
    target = tuple(opts["target"])
    sockets = max(1, opts.get("sockets", 1))
    opened = [await peer.open_client(opts["variant"], target, opts["timeout"])
              for _ in range(sockets)]
    common.set_udp_buffers(opts.get("sockbuf", 0))
    if sockets == 1:
        call, close = opened[0]
    else:  # spread the requests over several client sockets (several source ports)
        calls = [c for c, _ in opened]

        def call(i: int, data: bytes) -> Any:
            return calls[i % sockets](i, data)

        async def close() -> None:
            for _, closer in opened:
                await closer()

    try:
        return await common.drive(
            call,
            check=getattr(peer, "check_reply", common.check_reply),
            in_flight=opts["in_flight"],
            duration=opts["duration"],
            warmup=opts["warmup"],
        )
    finally:
        await close()
        await asyncio.sleep(0)


def main() -> None:
    opts = json.loads(sys.argv[1])
    common.pin(opts.get("cpu"))
    gc.collect()
    if opts.get("gc") == "off":  # a diagnostic: how much of the cost is the cyclic GC
        gc.disable()
    elif opts.get("gc") == "freeze":
        gc.freeze()
    m: common.Measurement = common.run_on(opts["loop"], measure(opts))
    print(json.dumps(m.as_dict()))


if __name__ == "__main__":
    main()
