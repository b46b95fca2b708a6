"""Showing results: a rich table (plain text without rich), and a PNG plot (matplotlib, Agg)."""

from __future__ import annotations

from typing import Any

from targets import Target

COLUMNS = (
    ("mode", "mode", "{}"),
    ("loop", "loop", "{}"),
    ("in flight", "in_flight", "{}"),
    ("peer", "peer", "{}"),
    ("variant", "variant", "{}"),
    ("req/s", "requests_per_s", "{:,.0f}"),
    ("p50 ms", "p50_ms", "{:.2f}"),
    ("p99 ms", "p99_ms", "{:.2f}"),
    ("client CPU µs/req", "cpu_us_per_request", "{:.1f}"),
    ("server CPU µs/req", "server_cpu_us_per_request", "{:.1f}"),
    ("errors", "errors", "{}"),
    ("rounds", "rounds", "{}"),
)


def print_results(rows: list[dict[str, Any]], targets: list[Target], *, stderr: bool = False
                  ) -> None:
    """The results and the targets as tables (on stderr when stdout carries JSON)."""
    import sys

    out = sys.stderr if stderr else sys.stdout
    cells = [[fmt.format(row.get(key, "")) for _, key, fmt in COLUMNS] for row in rows]
    target_cells = [
        [t.name, _fmt_target(t.measured, t.unit), ("≥ " if t.higher_is_better else "≤ ")
         + _fmt_target(t.required, t.unit), "yes" if t.met else "NO"]
        for t in targets
    ]
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        print(" | ".join(title for title, _, _ in COLUMNS), file=out)
        for line in cells:
            print(" | ".join(line), file=out)
        for line in target_cells:
            print(" | ".join(line), file=out)
        return
    console = Console(file=out, width=None if out.isatty() else 180)
    table = Table(title="request/reply over loopback UDP (medians over rounds)")
    for i, (title, _, _) in enumerate(COLUMNS):
        table.add_column(title, justify="right" if i >= 5 or i == 2 else "left")
    for line in cells:
        table.add_row(*line)
    console.print(table)
    if target_cells:
        tt = Table(title="targets (ratios: median of per-round ratios)")
        for title in ("target", "measured", "required", "met"):
            tt.add_column(title)
        for line in target_cells:
            tt.add_row(*line, style=None if line[3] == "yes" else "red")
        console.print(tt)


def _fmt_target(value: float, unit: str) -> str:
    return f"{value:,.0f} {unit}" if unit != "x" else f"{value:.2f}x"


def plot(rows: list[dict[str, Any]], path: str) -> bool:
    """Requests/s per peer, one panel per mode and in-flight count; False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    panels = sorted({(r["mode"], r["in_flight"]) for r in rows},
                    key=lambda p: (p[0] != "client", p[1]))
    loops = sorted({r["loop"] for r in rows})
    fig, axes = plt.subplots(len(panels), 1, figsize=(10, 2.8 * len(panels) + 0.6),
                             squeeze=False)
    for ax, (mode, inflight) in zip(axes[:, 0], panels, strict=True):
        sel = [r for r in rows if r["mode"] == mode and r["in_flight"] == inflight]
        labels = sorted({f"{r['peer']}/{r['variant']}" for r in sel},
                        key=lambda s: _PEER_ORDER.get(s.split("/")[0], 9))
        width = 0.8 / max(1, len(loops))
        for j, loop in enumerate(loops):
            values = []
            for label in labels:
                match = [r for r in sel if f"{r['peer']}/{r['variant']}" == label
                         and r["loop"] == loop]
                values.append(match[0]["requests_per_s"] if match else 0.0)
            xs = [i + (j - (len(loops) - 1) / 2) * width for i in range(len(labels))]
            bars = ax.bar(xs, values, width, label=loop)
            ax.bar_label(bars, labels=[f"{v / 1000:.0f}k" if v else "" for v in values],
                         fontsize=7)
        ax.set_xticks(range(len(labels)), labels, fontsize=8)
        ax.set_ylabel("requests/s")
        server = "common uvloop echo server" if mode == "client" else "each peer's own server"
        ax.set_title(f"{mode}: {inflight} in flight ({server})", fontsize=10)
        ax.legend(fontsize=8)
    fig.suptitle("loopback UDP, 8-byte id + 64-byte payload, client and server on their own cores",
                 fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.98))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


_PEER_ORDER = {"handrolled": 0, "handrolled_reader": 1, "aiodisp": 2, "rpcudp": 3, "aiocoap": 4}


def markdown(rows: list[dict[str, Any]], targets: list[dict[str, Any]]) -> str:
    """The results (and the targets) as Markdown tables, for docs/performance.md."""
    cols = [c for c in COLUMNS if c[1] != "rounds"]
    lines = ["| " + " | ".join(t for t, _, _ in cols) + " |",
             "|" + "|".join("---:" if i >= 5 or i == 2 else "---" for i in range(len(cols)))
             + "|"]
    for row in rows:
        lines.append("| " + " | ".join(fmt.format(row.get(key, "")) for _, key, fmt in cols)
                     + " |")
    if targets:
        lines += ["", "| target | measured | required | met |", "|---|---:|---:|---|"]
        for t in targets:
            sign = "≥" if t["higher_is_better"] else "≤"
            lines.append(f"| {t['name']} | {_fmt_target(t['measured'], t['unit'])} | "
                         f"{sign} {_fmt_target(t['required'], t['unit'])} | "
                         f"{'yes' if t['met'] else '**no**'} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """``python benchmarks/report.py results.json [--plot PNG]``: Markdown of a run.py JSON."""
    import argparse
    import json

    p = argparse.ArgumentParser(description="Markdown tables (and a plot) of run.py --json")
    p.add_argument("json")
    p.add_argument("--plot", metavar="PNG")
    p.add_argument("--in-flight", type=int, default=None, help="only this in-flight count")
    args = p.parse_args(argv)
    with open(args.json) as f:
        doc = json.load(f)
    rows = doc["results"]
    if args.in_flight is not None:
        rows = [r for r in rows if r["in_flight"] == args.in_flight]
    print(markdown(rows, doc.get("targets", [])), end="")
    if args.plot:
        plot(doc["results"], args.plot)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
