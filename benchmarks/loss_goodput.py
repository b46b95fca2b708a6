"""Goodput under loss: how fast notify() and request() deliver when datagrams vanish.

For each loss rate (default 0%, 5%, 20%, each way) and each call, ``--count``
calls are made with ``--concurrency`` in flight, and the benchmark reports

* goodput: messages delivered to the application per second (notify: distinct
  messages the serving application received; request: replies handed back to
  the caller), over the time from the first call to the last completion;
* retransmissions per message (the client dispatcher's ``stats``);
* p50 / p99 completion time of one call;
* copies the serving application saw more than once (must be 0), and
  notifications whose notify() returned normally but that the serving
  application never received (must be 0; see the note on the memory link);
* messages the server's dispatcher dropped because its incoming queue was full
  (recovered by retransmission when the sender waits for ACKs).

The link is, by default, the in-memory one (``aiodisp.Link(loss=p, seed=1)``,
both peers in this process: it runs anywhere). With ``--kernel`` (root, ``ip``,
``nft``) it is real UDP over a veth pair between two network namespaces, with
nftables dropping ``p`` of the datagrams arriving at each side; the peers are
the processes of ``tests/helpers/kernel_peers.py`` and the drop counters are reported.

notify() uses an adaptive first wait (from the measured RTT) and back-off capped
at 0.5 s; request() a RetryPolicy(initial_timeout=0.05, max_attempts=20,
max_interval=0.5). A lossless memory link is a reliable transport, so notify()
over it returns once sent, without waiting for an ACK: when the serving
dispatcher's queue (1024) overflows, those notifications are lost, and the
"app lost" column of that row shows how many.

    python benchmarks/loss_goodput.py [--kernel] [--json] [--count 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import logging
import math
import sys
from collections import Counter
from pathlib import Path
from types import ModuleType
from typing import Any

import aiodisp
from aiodisp.adapters import IdPrefixAdapter

NOTIFY_ARGS = ("--initial-timeout", "0", "--max-attempts", "0", "--max-interval", "0.5")
REQUEST_ARGS = ("--initial-timeout", "0.05", "--max-attempts", "20", "--max-interval", "0.5")
CALL_TIMEOUT = 30.0


def load_peers() -> ModuleType:
    """The workload, the peers and the namespace lab, kept once in tests/helpers/kernel_peers.py."""
    path = Path(__file__).resolve().parent.parent / "tests" / "helpers" / "kernel_peers.py"
    spec = importlib.util.spec_from_file_location("kernel_peers", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def percentile(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def row(link: str, loss: int, mode: str, count: int, client: dict[str, Any],
        received: list[int], server_stats: dict[str, int], **extra: Any) -> dict[str, Any]:
    """One line of results from the client's report and what the server side saw."""
    distinct = len(set(received)) if mode == "notify" else client["ok"]
    failed = {int(e.split(":", 1)[0]) for e in client["errors"]}
    lost = set(range(1, count + 1)) - failed - set(received)
    latencies = client["latencies"]
    return {
        "link": link,
        "loss_percent": loss,
        "call": mode,
        "calls": count,
        "ok": client["ok"],
        "errors": len(client["errors"]),
        "elapsed_s": round(client["elapsed"], 4),
        "goodput_msg_s": round(distinct / client["elapsed"], 1) if client["elapsed"] else None,
        "retransmissions_per_msg": round(client["stats"]["retransmissions"] / count, 4),
        "p50_ms": round(percentile(latencies, 0.50) * 1e3, 3),
        "p99_ms": round(percentile(latencies, 0.99) * 1e3, 3),
        "app_duplicates": sum(n - 1 for n in Counter(received).values()),
        "app_lost": len(lost),
        "server_queue_drops": server_stats["queue_drops"],
        "server_duplicates_dropped": server_stats["duplicates"],
        **extra,
    }


async def memory_case(peers: ModuleType, loss: int, mode: str, count: int,
                      concurrency: int) -> dict[str, Any]:
    adapter = IdPrefixAdapter()
    client, server = await aiodisp.open_memory_pair(
        adapter, link=aiodisp.Link(loss=loss / 100, seed=1), seed=1
    )
    seen: list[int] = []
    mismatched: list[int] = []
    app = asyncio.create_task(
        peers.serve_app(server, seen, mismatched, reply=mode == "request")
    )
    argv = NOTIFY_ARGS if mode == "notify" else REQUEST_ARGS
    retry = peers.policy_from(float(argv[1]), int(argv[3]), float(argv[5]))
    try:
        res = await peers.run_calls(
            client, server.local_addr, mode=mode, count=count, concurrency=concurrency,
            timeout=CALL_TIMEOUT, retry=retry,
        )
    finally:
        await client.close()
        await server.close()
        await app
    report = {"ok": res.ok, "errors": res.errors, "latencies": res.latencies,
              "elapsed": res.elapsed, "stats": client.stats.as_dict()}
    return row("memory", loss, mode, count, report, seen, server.stats.as_dict())


def kernel_case(peers: ModuleType, loss: int, mode: str, count: int,
                concurrency: int) -> dict[str, Any]:
    argv = NOTIFY_ARGS if mode == "notify" else REQUEST_ARGS
    with peers.LossLab(loss) as lab:
        client, server = lab.exchange(
            mode, "--count", str(count), "--concurrency", str(concurrency),
            "--timeout", str(CALL_TIMEOUT), *argv,
        )
        drops = lab.counters()
    return row("kernel", loss, mode, count, client, server["received"], server["stats"],
               nft_dropped_to_server=drops["to_server"]["dropped"],
               nft_dropped_to_client=drops["to_client"]["dropped"])


def measure(*, kernel: bool, losses: list[int], count: int, concurrency: int,
            ) -> list[dict[str, Any]]:
    peers = load_peers()
    if kernel:
        reason = peers.unavailable_reason()
        if reason is not None:
            raise SystemExit(f"--kernel: {reason}")
    rows = []
    for loss in losses:
        for mode in ("notify", "request"):
            if kernel:
                rows.append(kernel_case(peers, loss, mode, count, concurrency))
            else:
                rows.append(asyncio.run(memory_case(peers, loss, mode, count, concurrency)))
    return rows


COLUMNS = (
    ("link", "link"), ("loss_percent", "loss %"), ("call", "call"), ("ok", "ok"),
    ("errors", "errors"), ("goodput_msg_s", "goodput msg/s"),
    ("retransmissions_per_msg", "retx/msg"), ("p50_ms", "p50 ms"), ("p99_ms", "p99 ms"),
    ("app_duplicates", "app dups"), ("app_lost", "app lost"),
    ("server_queue_drops", "srv queue drops"),
)
KERNEL_COLUMNS = (("nft_dropped_to_server", "nft drop →srv"),
                  ("nft_dropped_to_client", "nft drop →cli"))


def print_table(rows: list[dict[str, Any]], count: int, concurrency: int) -> None:
    columns = COLUMNS + (KERNEL_COLUMNS if rows and "nft_dropped_to_server" in rows[0] else ())
    title = f"aiodisp goodput under loss ({count} calls, {concurrency} in flight)"
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        print(title)
        cells = [[label for _, label in columns]]
        cells += [[str(r[key]) for key, _ in columns] for r in rows]
        widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
        for line in cells:
            print("  ".join(cell.rjust(width) for cell, width in zip(line, widths, strict=True)))
        return
    table = Table(title=title)
    for key, label in columns:
        table.add_column(label, justify="left" if key in ("link", "call") else "right")
    for r in rows:
        table.add_row(*(str(r[key]) for key, _ in columns))
    console = Console()
    console.width = max(console.width, 150)
    console.print(table)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kernel", action="store_true",
                        help="real UDP between network namespaces, nftables loss (root)")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    parser.add_argument("--count", type=int, default=2000, help="calls per row")
    parser.add_argument("--concurrency", type=int, default=100, help="calls in flight")
    parser.add_argument("--loss", default="0,5,20", help="loss percentages, comma-separated")
    args = parser.parse_args(argv)
    # Drops are counted in the table; the dispatcher's rate-limited log would only repeat them.
    logging.getLogger("aiodisp").setLevel(logging.ERROR)
    losses = [int(p) for p in args.loss.split(",")]
    rows = measure(kernel=args.kernel, losses=losses, count=args.count,
                   concurrency=args.concurrency)
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print_table(rows, args.count, args.concurrency)


if __name__ == "__main__":
    main()
