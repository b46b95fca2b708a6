"""An echo server on aiodisp: answers every JSON message with a copy marked as a reply.

Run it, then talk to it with ``examples/echo_client.py`` or the command line::

    python examples/echo_server.py 127.0.0.1:9000
    python examples/echo_client.py 127.0.0.1:9000
    aiodisp request 127.0.0.1:9000 '{"id": 1, "text": "hi"}'

It speaks what ``aiodisp serve`` speaks by default: JSON objects keyed by
``"id"``, replies marked ``"reply": true``, ACK framing over UDP. Ctrl-C or
SIGTERM stops it.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from typing import Any

import aiodisp
from aiodisp.adapters import JsonAdapter


async def echo(msg: dict[str, Any], addr: Any) -> dict[str, Any]:
    """The handler: what it returns is sent back to ``addr`` as the reply."""
    return {**msg, "reply": True}


async def main(host: str, port: int) -> None:
    adapter = JsonAdapter(key_field="id", reply_field="reply")
    async with await aiodisp.open_udp(adapter, (host, port)) as server:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        serving = asyncio.create_task(server.serve(echo))  # until the dispatcher closes
        shown = f"[{server.local_addr[0]}]" if ":" in host else server.local_addr[0]
        print(f"echo server listening on udp://{shown}:{server.local_addr[1]} "
              "(json messages, ack framing); Ctrl-C stops it", flush=True)
        await stop.wait()
        stats = server.stats
    await serving
    print(f"stopped after {stats.delivered} messages", flush=True)


if __name__ == "__main__":
    host, _, port = (sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:9000").rpartition(":")
    asyncio.run(main(host.strip("[]"), int(port)))
