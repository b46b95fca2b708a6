"""The ``aiodisp`` command line."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Sequence


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aiodisp", description="Request/reply messaging over datagrams."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run an echo server and a client on loopback UDP")
    demo.add_argument("--count", type=int, default=20_000, help="requests to make")
    demo.add_argument("--in-flight", type=int, default=64, help="requests in flight at once")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "demo":
        from ._demo import run_demo

        asyncio.run(run_demo(args.count, args.in_flight))
        return 0
    return 2
