"""Addresses as the kernel sees them: one canonical form per peer.

A transport reports every sender, and :func:`resolve_address` returns every
destination, in one form, so an address received can be compared with (and
used as a dict key beside) an address given by the user:

* IPv4 peers: ``(host, port)`` with a numeric host, on an ``AF_INET`` socket
  and on a dual-stack ``AF_INET6`` one alike (an IPv4-mapped
  ``("::ffff:1.2.3.4", port, 0, 0)`` becomes ``("1.2.3.4", port)``).
* IPv6 peers: ``(host, port, 0, scope_id)``: the flow label is dropped (the
  kernel reports 0 for it) and ``scope_id`` is kept only where the address
  needs one (link-local and interface- or link-scoped multicast), as the
  kernel reports it.
* A wildcard destination (``0.0.0.0``, ``::``), which the kernel delivers to
  this host, is the loopback it reaches (``127.0.0.1``, ``::1``): the address
  a reply then comes from. From an IPv4 socket, ``("::", port)`` (a dual-stack
  server's own address) is ``("127.0.0.1", port)``.
* Unix datagram peers: a ``str``. A destination path is made absolute with
  its symbolic links resolved (``os.path.realpath``), so ``./x``, ``//x`` and
  a symlink to ``x`` all name one peer, and aiodisp binds its own sockets by
  that canonical path, which is what the kernel then reports for them. A
  *received* address is taken exactly as the kernel reports it, never
  resolved against the file system or the current directory: a name the
  kernel reports is the sender's own bind string, and resolving it again
  would let a local process whose bound directory was since swapped for a
  symlink pass for the peer the symlink points to. So a peer that did not
  bind by its canonical path (a relative or symlinked name, as a program
  other than aiodisp may) is answered by the name it reported, but a request
  sent to it by another name cannot match its replies (use
  ``check_source=False`` for it). An abstract name (what the kernel reports
  as ``b"\\0..."`` for an autobound socket) is the ``str`` ``"\\0..."``. A
  path whose resolved form no longer fits in ``sun_path`` (107 bytes) is kept
  as given. A sender with no address (an unbound socket) is reported as
  ``None``: it cannot be answered, and sending to it raises
  :class:`TransportError`.

Malformed addresses (not a tuple, a port outside 0-65535, unhashable parts, a
host of the wrong family) raise :class:`TransportError`.
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket
from typing import Any

from ..errors import TransportError
from .base import Address

__all__ = [
    "UNIX_PATH_MAX",
    "canonical_unix_path",
    "check_port",
    "is_wildcard",
    "needs_scope",
    "received_ip6_address",
    "received_unix_address",
    "resolve_address",
    "socket_address",
    "transport_error",
    "unbound_peer_error",
    "unix_address",
]

#: The longest Unix socket path the kernel takes (``sun_path`` less its NUL).
UNIX_PATH_MAX = 107

_MAPPED = "::ffff:"
_LOOPBACK_OF_WILDCARD = {"0.0.0.0": "127.0.0.1", "::": "::1"}
_NUMERIC = socket.AI_NUMERICHOST | socket.AI_NUMERICSERV


def transport_error(message: str, code: int = errno.EINVAL) -> TransportError:
    """A TransportError whose ``errno`` says what kind of failure it is."""
    exc = TransportError(message)
    exc.errno = code
    return exc


def unbound_peer_error(addr: Address) -> TransportError:
    """Sending to a peer that has no address (a datagram from an unbound Unix socket)."""
    return transport_error(
        f"the peer {addr!r} is an unbound socket: it has no address and cannot be answered",
        errno.EDESTADDRREQ,
    )


async def resolve_address(loop: asyncio.AbstractEventLoop, family: int, addr: Address) -> Address:
    """``addr`` in the canonical form a socket of ``family`` reports senders in.

    Numeric addresses are converted at once; host names are resolved with
    ``loop.getaddrinfo`` (in a thread, cancellable: cancelling the caller
    abandons the look-up).
    """
    if family == socket.AF_UNIX:
        return unix_address(addr)
    return await _ip_address(loop, family, addr)


# --------------------------------------------------------------------------- Unix


def unix_address(addr: Address) -> str:
    """The canonical form of a Unix datagram destination (see the module docstring)."""
    if addr is None or addr == "" or addr == b"":
        raise unbound_peer_error(addr)
    if isinstance(addr, os.PathLike):
        addr = os.fspath(addr)
    if isinstance(addr, bytes):
        addr = os.fsdecode(addr)
    if not isinstance(addr, str):
        raise transport_error(f"{addr!r} is not a Unix socket path")
    if "\0" in addr[1:] and addr[0] != "\0":
        raise transport_error(f"{addr!r} is not a Unix socket path (it holds a NUL)")
    return canonical_unix_path(addr)


def canonical_unix_path(path: str) -> str:
    """An absolute path with symlinks resolved; an abstract name (``"\\0..."``) as is."""
    if path.startswith("\0"):
        return path
    real = os.path.realpath(path)
    if real.startswith("//"):
        real = "/" + real.lstrip("/")
    if len(os.fsencode(real)) > UNIX_PATH_MAX:
        return path  # only the name as given fits in sun_path
    return real


def received_unix_address(addr: str | bytes | None) -> str | None:
    """A sender's address as ``recvfrom`` reports it, in the one form: an abstract
    name (bytes) as ``str``, no address as None; a path exactly as reported."""
    if addr is None or addr == "" or addr == b"":
        return None
    if isinstance(addr, bytes):
        return os.fsdecode(addr)  # an abstract name
    return addr


# --------------------------------------------------------------------------- IP


def received_ip6_address(addr: tuple[Any, ...]) -> tuple[Any, ...]:
    """An AF_INET6 socket's sender in canonical form: IPv4-mapped senders as 2-tuples."""
    host = addr[0]
    if host.startswith(_MAPPED) and "." in host:
        return (host[7:], addr[1])
    return addr


def socket_address(family: int, addr: Address) -> Address:
    """What ``sendto`` needs for a canonical ``addr``: on an AF_INET6 socket an IPv4
    2-tuple becomes the IPv4-mapped 4-tuple."""
    if family == socket.AF_INET6 and len(addr) == 2 and ":" not in addr[0]:
        return (_MAPPED + addr[0], addr[1], 0, 0)
    return addr


def is_wildcard(host: str) -> bool:
    """True for the unspecified addresses a socket may be bound to."""
    return host in ("0.0.0.0", "::", "::ffff:0.0.0.0")


def needs_scope(host: str) -> bool:
    """True for IPv6 addresses whose scope id matters (link-local, link/interface multicast)."""
    h = host.lower()
    return h.startswith(("fe8", "fe9", "fea", "feb", "ff01:", "ff02:", "ff11:", "ff12:"))


def check_port(addr: Address, port: Any) -> None:
    """A port is an int in 0..65535 or a service name; anything else is refused."""
    if isinstance(port, bool) or not isinstance(port, int | str):
        raise transport_error(f"{addr!r}: the port {port!r} is not an integer")
    if isinstance(port, int) and not 0 <= port <= 65535:
        raise transport_error(f"{addr!r}: the port {port} is outside 0-65535")


def _is_ip6_unspecified(host: str) -> bool:
    try:
        return socket.inet_pton(socket.AF_INET6, host) == bytes(16)
    except (OSError, ValueError):
        return False


async def _ip_address(loop: asyncio.AbstractEventLoop, family: int, addr: Address) -> Address:
    if not (isinstance(addr, tuple) and len(addr) in (2, 4)):
        raise transport_error(f"{addr!r} is not a (host, port) address")
    host, port = addr[0], addr[1]
    if not isinstance(host, str):
        raise transport_error(f"{addr!r}: the host {host!r} is not a string")
    check_port(addr, port)
    if family == socket.AF_INET and _is_ip6_unspecified(host):
        # A dual-stack server's own ("::", port): from an IPv4 socket, this host's
        # IPv4 loopback reaches it.
        return await _ip_address(loop, family, ("127.0.0.1", port))
    if len(addr) == 4 and family != socket.AF_INET6:
        raise transport_error(f"{addr!r} is an IPv6 address; this socket is IPv4")
    scope = 0
    if len(addr) == 4:
        flowinfo, scope = addr[2], addr[3]
        for name, value, top in (("flowinfo", flowinfo, 0xFFFFF), ("scope id", scope, 2**32 - 1)):
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= top:
                raise transport_error(f"{addr!r}: the {name} {value!r} is not in 0-{top}")
    if host.startswith(_MAPPED) and "." in host:
        host = host[7:]  # an IPv4-mapped address is the IPv4 peer it maps
    numeric = _NUMERIC
    flags = 0
    if family == socket.AF_INET6:
        flags = socket.AI_V4MAPPED
    try:
        infos: list[Any] = socket.getaddrinfo(host, port, family, socket.SOCK_DGRAM, 0,
                                              numeric | flags)
    except (socket.gaierror, UnicodeError):
        try:
            infos = await loop.getaddrinfo(host, port, family=family, type=socket.SOCK_DGRAM,
                                           flags=flags)
        except (OSError, UnicodeError) as exc:
            raise transport_error(f"cannot resolve {addr!r}: {exc}", errno.EADDRNOTAVAIL) from exc
    except (TypeError, ValueError, OverflowError) as exc:
        raise transport_error(f"{addr!r} is not a valid address: {exc}") from exc
    if not infos:
        raise transport_error(f"{addr!r} resolves to no address of this socket's family")
    sockaddr = infos[0][4]
    rhost, rport = sockaddr[0], sockaddr[1]
    rhost = _LOOPBACK_OF_WILDCARD.get(rhost, rhost)
    if family == socket.AF_INET:
        return (rhost, rport)
    if rhost.startswith(_MAPPED) and "." in rhost:
        v4 = rhost[7:]
        return (_LOOPBACK_OF_WILDCARD.get(v4, v4), rport)
    scope = (scope or sockaddr[3]) if needs_scope(rhost) else 0
    return (rhost, rport, 0, scope)
