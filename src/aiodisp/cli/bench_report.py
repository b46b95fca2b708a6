"""What ``aiodisp bench`` shows: progress on stderr while it runs, then a table or JSON.

The table and the JSON are made from the same :class:`BenchResult`, so they
show the same numbers.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from .bench_measure import BenchResult, Tally

__all__ = ["Progress", "print_json", "print_table", "rows"]


class Progress:
    """A rich progress bar on stderr, or a plain line a second without rich.

    ``quiet`` (``--json`` with stderr not a terminal) shows nothing.
    """

    def __init__(self, *, count: int | None, duration: float, quiet: bool) -> None:
        self._count = count
        self._duration = duration
        self._quiet = quiet
        self._bar: Any = None
        self._task: Any = None
        self._last_print = 0.0

    def say(self, line: str) -> None:
        """One line on stderr (unless quiet)."""
        if not self._quiet:
            print(f"aiodisp bench: {line}", file=sys.stderr, flush=True)

    def __enter__(self) -> Progress:
        if self._quiet or not sys.stderr.isatty():
            return self
        try:
            from rich.console import Console
            from rich.progress import BarColumn, TextColumn, TimeRemainingColumn
            from rich.progress import Progress as Bar
        except ImportError:
            return self
        self._bar = Bar(
            TextColumn("[bold]aiodisp bench"),
            BarColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            auto_refresh=False,
            transient=True,
        )
        self._bar.__enter__()
        total = self._count if self._count is not None else self._duration
        self._task = self._bar.add_task("bench", total=total, rate="")
        return self

    def update(self, tally: Tally, elapsed: float) -> None:
        done = tally.ended
        rate = f"{len(tally.latencies) / elapsed:,.0f} req/s" if elapsed > 0 else ""
        if self._bar is not None:
            completed = done if self._count is not None else min(elapsed, self._duration)
            self._bar.update(self._task, completed=completed, rate=rate)
            self._bar.refresh()
        elif elapsed - self._last_print >= 1.0:
            self._last_print = elapsed
            self.say(f"{done:,} requests in {elapsed:.1f} s, {rate}")

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.__exit__(None, None, None)


def rows(result: BenchResult) -> list[tuple[str, str]]:
    """The table's rows: (what, value)."""
    table = [
        ("target", f"udp://{result.target} ({result.framing} framing, "
                   f"{result.format} messages, {result.loop})"),
        ("in flight / payload", f"{result.in_flight} / {result.payload} bytes"),
        ("completed", f"{result.completed:,} in {result.elapsed_s:.2f} s"),
        ("requests/s", f"{result.requests_per_s:,.0f}"),
        ("latency p50 / p90 / p99 / max",
         f"{result.p50_ms:.3f} / {result.p90_ms:.3f} / {result.p99_ms:.3f} / "
         f"{result.max_ms:.3f} ms"),
        ("client CPU per request", f"{result.cpu_us_per_request:.1f} µs"),
        ("timeouts", f"{result.timeouts:,}"),
        ("retransmissions", f"{result.retransmissions:,}"),
    ]
    if result.loss:
        table.append(("loss / dropped", f"{result.loss:g} / {result.dropped_by_loss:,}"))
    if result.mismatched:
        table.append(("WRONG REPLIES", f"{result.mismatched:,}"))
    return table


def print_table(result: BenchResult) -> None:
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        for name, value in rows(result):
            print(f"{name:>32}  {value}")
        return
    table = Table(title="aiodisp bench", show_header=False)
    table.add_column(justify="right", style="bold")
    table.add_column()
    for name, value in rows(result):
        table.add_row(name, value)
    Console().print(table)


def print_json(result: BenchResult) -> None:
    print(json.dumps(result.as_dict(), indent=2))
