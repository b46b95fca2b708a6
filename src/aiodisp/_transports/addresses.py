"""Turning user-given addresses into the form datagrams arrive from."""

from __future__ import annotations

import asyncio
import os
import socket
from typing import Any

from ..errors import TransportError
from .base import Address


async def resolve_address(loop: asyncio.AbstractEventLoop, family: int, addr: Address) -> Address:
    """``addr`` as a socket of ``family`` reports senders: a numeric 2-tuple (IPv4),
    4-tuple (IPv6) or a path (Unix). Host names are resolved without blocking."""
    if family == socket.AF_UNIX:
        return _unix_address(addr)
    return await _ip_address(loop, family, addr)


def _unix_address(addr: Address) -> str:
    if isinstance(addr, str | bytes | os.PathLike):
        path = os.fsdecode(addr)
        if path:
            return path
    raise TransportError(f"{addr!r} is not a Unix socket path")


async def _ip_address(loop: asyncio.AbstractEventLoop, family: int, addr: Address) -> Address:
    if not (isinstance(addr, tuple) and len(addr) in (2, 4)):
        raise TransportError(f"{addr!r} is not a (host, port) address")
    host, port = addr[0], addr[1]
    numeric = socket.AI_NUMERICHOST | socket.AI_NUMERICSERV
    if family == socket.AF_INET6:
        numeric |= socket.AI_V4MAPPED
    try:
        infos: list[Any] = socket.getaddrinfo(host, port, family, socket.SOCK_DGRAM, 0, numeric)
    except (socket.gaierror, UnicodeError):
        try:
            infos = await loop.getaddrinfo(
                host,
                port,
                family=family,
                type=socket.SOCK_DGRAM,
                flags=socket.AI_V4MAPPED if family == socket.AF_INET6 else 0,
            )
        except (OSError, UnicodeError) as exc:
            raise TransportError(f"cannot resolve {addr!r}: {exc}") from exc
    except (TypeError, OverflowError) as exc:
        raise TransportError(f"{addr!r} is not a valid address: {exc}") from exc
    if not infos:
        raise TransportError(f"{addr!r} resolves to no address of this socket's family")
    sockaddr = infos[0][4]
    if family == socket.AF_INET6 and len(addr) == 4:
        return (sockaddr[0], sockaddr[1], addr[2], addr[3] or sockaddr[3])
    return tuple(sockaddr)


