"""Servers the tests run on a dispatcher."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from typing import Any

import aiodisp

__all__ = ["echo_server", "silent_udp"]


async def echo_server(d: aiodisp.Dispatcher[Any], *, flag: bool = False) -> None:
    """Reply to every message with the same key and payload."""
    async for msg, _size, addr in d:
        reply = (msg[0], msg[1], True) if flag else msg
        await d.notify_unreliable(reply, addr)


@contextlib.contextmanager
def silent_udp(host: str = "127.0.0.1") -> Iterator[tuple[Any, ...]]:
    """The address of a bound UDP socket that never reads: a peer that never answers.

    (A closed port would answer with ICMP port unreachable, which fails calls to
    it at once with PeerUnreachable.)
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.bind((host, 0))
        yield sock.getsockname()
    finally:
        sock.close()
