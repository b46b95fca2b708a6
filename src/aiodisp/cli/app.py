"""The ``aiodisp`` command line: ``serve``, ``request``, ``notify``, ``bench`` and ``demo``.

Exit status: 0 on success, 1 when the exchange failed (no reply in time, a
transport error), 2 on bad input (an address or a message that does not parse,
conflicting options), 130 when interrupted (Ctrl-C). Errors are one line on
stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from aiodisp import __version__

from . import bench, demo, loop, request, serve
from .args import EXIT_INTERRUPTED, EXIT_USAGE, UsageError, common_options, fail

__all__ = ["main", "parser"]


def parser() -> argparse.ArgumentParser:
    """The whole command line."""
    top = argparse.ArgumentParser(
        prog="aiodisp",
        description="Request/reply messaging over datagrams (UDP, Unix datagram sockets).",
        epilog="Addresses are HOST:PORT, [IPV6]:PORT or unix:PATH. Exit status: 0 success, "
        "1 failed exchange (timeout, transport error), 2 bad input, 130 interrupted.",
    )
    top.add_argument("--version", action="version", version=f"aiodisp {__version__}")
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    common = common_options()
    serve.add_parser(sub, common)
    request.add_parsers(sub, common)
    bench.add_parser(sub, common)
    demo.add_parser(sub)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    try:
        return _main(argv)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


def _main(argv: Sequence[str] | None) -> int:
    args = parser().parse_args(argv)
    command: str = args.command
    _setup_logging(getattr(args, "verbose", 0))
    try:
        if command == "demo":
            return demo.run(args)
        if command == "bench":
            return bench.run(args)
        loop.check_uvloop(args.uvloop)
        if command == "serve":
            fmt, where = serve.prepare(args)
            return loop.run(lambda: serve.serve(args, fmt, where), use_uvloop=args.uvloop)
        fmt, msg = request.prepare(args)
        return loop.run(lambda: request.exchange(args, fmt, msg), use_uvloop=args.uvloop)
    except UsageError as exc:
        return fail(command, str(exc), EXIT_USAGE)


def _setup_logging(verbose: int) -> None:
    level = logging.ERROR if verbose == 0 else logging.WARNING if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="aiodisp: %(levelname)s %(message)s",
                        stream=sys.stderr)
