"""A benchmark server process: ``python server_main.py '<json options>'``.

Options: ``peer`` (a peer name, or ``"echo"`` for the common echo server),
``variant``, ``loop``, ``cpu`` (core to pin to, or null), ``host``, ``port``,
``reuse_port`` (aiodisp only), ``sockbuf`` (socket buffer bytes; 0: the OS
default). It prints one JSON line with its address(es) once
bound and stops when its stdin closes, so it never outlives the harness.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common
import peers

_SOCKBUF = 0


def _ready(addr: Any) -> None:
    common.set_udp_buffers(_SOCKBUF)
    sys.stdout.write(json.dumps(addr) + "\n")
    sys.stdout.flush()


async def _main(opts: dict[str, Any]) -> None:
    loop = asyncio.get_running_loop()
    stop: asyncio.Future[None] = loop.create_future()
    stdin = sys.stdin.fileno()

    def on_stdin() -> None:
        if not os.read(stdin, 4096) and not stop.done():
            stop.set_result(None)

    loop.add_reader(stdin, on_stdin)
    addr = (opts.get("host", "127.0.0.1"), opts.get("port", 0))
    try:
        if opts["peer"] == "echo":
            import echo_server

            await echo_server.serve_common(
                tuple(opts["modes"]), _ready, stop, host=addr[0],
                hold=opts.get("hold", 1.0), expect=opts.get("expect", 0),
            )
        elif opts.get("reuse_port"):
            from aiodisp.cli.echo import serve_echo

            await serve_echo(addr, opts["variant"], ready=_ready, stop=stop, reuse_port=True)
        else:
            await peers.load(opts["peer"]).serve(opts["variant"], addr, _ready, stop)
    finally:
        loop.remove_reader(stdin)


def main() -> None:
    global _SOCKBUF
    opts = json.loads(sys.argv[1])
    _SOCKBUF = opts.get("sockbuf", 0)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    common.pin(opts.get("cpu"))
    common.run_on(opts["loop"], _main(opts))


if __name__ == "__main__":
    main()
