"""A client for ``examples/echo_server.py`` (or ``aiodisp serve``): requests and a notification.

    python examples/echo_client.py 127.0.0.1:9000 [TIMEOUT_SECONDS]

Five requests go out at once on one socket; each reply wakes the request with
its ``"id"``. Lost datagrams are sent again by the retry policy. Then a
notification waits for the server's ACK.
"""

from __future__ import annotations

import asyncio
import json
import sys

import aiodisp
from aiodisp.adapters import JsonAdapter

RETRY = aiodisp.RetryPolicy(initial_timeout=0.2, backoff=2.0, max_attempts=5)


async def main(host: str, port: int, timeout: float = 5.0) -> int:
    server = (host, port)
    adapter = JsonAdapter(key_field="id", reply_field="reply")
    local = ("::", 0) if ":" in host else ("0.0.0.0", 0)
    async with await aiodisp.open_udp(adapter, local) as client:
        try:
            replies = await asyncio.gather(*(
                client.request({"id": i, "text": f"hello {i}"}, server,
                               timeout=timeout, retry=RETRY)
                for i in range(5)
            ))
            for reply in replies:
                print(json.dumps(reply))
            await client.notify({"id": "note-1", "text": "bye"}, server, timeout=timeout)
            print("notification acknowledged")
        except aiodisp.RequestTimeout as exc:
            print(f"no answer: {exc}", file=sys.stderr)
            return 1
        stats = client.stats
    print(f"sent {stats.sent} datagrams, {stats.retransmissions} retransmitted, "
          f"{stats.replies_matched} replies, {stats.acks_received} ACK")
    return 0


if __name__ == "__main__":
    host, _, port = (sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:9000").rpartition(":")
    timeout = float(sys.argv[2]) if len(sys.argv) > 2 else 5.0
    raise SystemExit(asyncio.run(main(host.strip("[]"), int(port), timeout)))
