"""What the command line reads: addresses, numbers, messages, and the options every command shares.

One address parser for every command: ``HOST:PORT``, ``[IPV6]:PORT`` or
``unix:PATH``, names resolved here, port 0 only where a command listens.
"""

from __future__ import annotations

import argparse
import json
import re
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

__all__ = [
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "UsageError",
    "Where",
    "address_arg",
    "common_options",
    "count_arg",
    "fail",
    "listen_arg",
    "parse_address",
    "positive_arg",
    "read_message",
    "udp_address_arg",
    "udp_listen_arg",
]

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
#: What a shell reports for a process stopped by SIGINT (128 + 2).
EXIT_INTERRUPTED = 130


class UsageError(Exception):
    """Bad input from the user: reported on stderr with exit status 2."""


def fail(command: str, text: str, status: int = EXIT_FAILED) -> int:
    """Print ``aiodisp COMMAND: error: TEXT`` on stderr; return ``status``."""
    print(f"aiodisp {command}: error: {text}", file=sys.stderr)
    return status


# ---------------------------------------------------------------------- addresses


@dataclass(frozen=True)
class Where:
    """A place to listen on or send to: a UDP ``(host, port)`` or a Unix socket path."""

    kind: Literal["udp", "unix"]
    addr: Any  # (host, port) for UDP, the path for Unix

    def __str__(self) -> str:
        return f"unix:{self.addr}" if self.kind == "unix" else f"udp://{self.hostport}"

    @property
    def hostport(self) -> str:
        """``HOST:PORT`` (``[IPV6]:PORT``), as :func:`parse_address` reads it back."""
        host, port = self.addr[0], self.addr[1]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    def client_bind(self) -> tuple[str, int]:
        """Where a client that talks to this UDP address binds its socket."""
        host = self.addr[0]
        if ":" in host:
            return ("::", 0)
        return ("127.0.0.1", 0) if host.startswith("127.") else ("0.0.0.0", 0)


_BRACKETED = re.compile(r"\[(?P<host>[^\]]+)\]:(?P<port>[^:]*)")


def parse_address(text: str, *, listen: bool = False) -> Where:
    """``HOST:PORT``, ``[IPV6]:PORT`` or ``unix:PATH`` as a :class:`Where`.

    Host names are resolved here (numeric addresses need no lookup), so the
    returned UDP address is numeric. Port 0 is only accepted to listen on.
    """
    if text.startswith("unix:"):
        path = text[len("unix:") :]
        if not path:
            raise UsageError(f"{text!r}: the Unix socket path is empty")
        return Where("unix", path)
    match = _BRACKETED.fullmatch(text)
    if match:
        host, port_text = match["host"], match["port"]
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep or not host:
            raise UsageError(f"{text!r} is not HOST:PORT ([IPV6]:PORT, unix:PATH)")
        if ":" in host:
            raise UsageError(f"{text!r}: put an IPv6 address in brackets, as in [::1]:9000")
    if not port_text.isdigit() or int(port_text) > 65535 or (int(port_text) == 0 and not listen):
        lowest = 0 if listen else 1
        raise UsageError(f"{text!r}: the port must be a number from {lowest} to 65535")
    port = int(port_text)
    try:
        infos = socket.getaddrinfo(host, port, 0, socket.SOCK_DGRAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise UsageError(f"{text!r}: cannot resolve {host!r} ({exc})") from None
    ip = [info for info in infos if info[0] in (socket.AF_INET, socket.AF_INET6)]
    if not ip:
        raise UsageError(f"{text!r}: {host!r} has no IPv4 or IPv6 address")
    return Where("udp", (str(ip[0][4][0]), port))


def _argument(parse: Callable[[str], Where]) -> Callable[[str], Where]:
    def convert(text: str) -> Where:
        try:
            return parse(text)
        except UsageError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return convert


def _udp_only(text: str, *, listen: bool) -> Where:
    where = parse_address(text, listen=listen)
    if where.kind != "udp":
        raise UsageError(f"{text!r}: this command works over UDP only (HOST:PORT, [IPV6]:PORT)")
    return where


address_arg = _argument(parse_address)
listen_arg = _argument(lambda text: parse_address(text, listen=True))
udp_address_arg = _argument(lambda text: _udp_only(text, listen=False))
udp_listen_arg = _argument(lambda text: _udp_only(text, listen=True))


# ---------------------------------------------------------------------- numbers and messages


def positive_arg(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive number")
    return value


def count_arg(lowest: int) -> Callable[[str], int]:
    """An argparse type: a whole number of at least ``lowest``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < lowest:
            raise argparse.ArgumentTypeError(f"{text!r} must be at least {lowest}")
        return value

    return parse


def read_message(text: str) -> Any:
    """The JSON of a MESSAGE argument; ``-`` reads it from stdin."""
    if text == "-":
        text = sys.stdin.read()
        if not text.strip():
            raise UsageError("MESSAGE is '-' but stdin has no message")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"{text.strip()!r} is not JSON: {exc}") from None


# ---------------------------------------------------------------------- shared options


def common_options() -> argparse.ArgumentParser:
    """The options of every command that talks: framing, message format, loop, verbosity."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--framing", choices=("ack", "raw"), default="ack",
        help="ack: 8-byte header, ACKs and de-duplication (default); "
        "raw: the message is the whole datagram",
    )
    common.add_argument(
        "--format", choices=("json", "idprefix"), default="json",
        help="json: a JSON object keyed by --key-field (default); "
        "idprefix: an 8-byte id then a payload, written {\"id\": 1, \"payload\": \"hi\"}",
    )
    common.add_argument("--key-field", default="id", help="json: the field that is the key (id)")
    common.add_argument(
        "--reply-field", default="reply", help="json: the field that marks replies (reply)"
    )
    common.add_argument("--uvloop", action="store_true", help="run on uvloop")
    common.add_argument(
        "-v", "--verbose", action="count", default=0,
        help="say how each exchange went and log dropped datagrams (-vv: debug)",
    )
    return common
