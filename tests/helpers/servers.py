"""Servers the tests run on a dispatcher."""

from __future__ import annotations

from typing import Any

import aiodisp

__all__ = ["echo_server"]


async def echo_server(d: aiodisp.Dispatcher[Any], *, flag: bool = False) -> None:
    """Reply to every message with the same key and payload."""
    async for msg, _size, addr in d:
        reply = (msg[0], msg[1], True) if flag else msg
        await d.notify_unreliable(reply, addr)
