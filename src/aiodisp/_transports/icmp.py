"""ICMP errors from a UDP socket's error queue (Linux: IP_RECVERR, IPV6_RECVERR).

An unconnected UDP socket hears of no ICMP error unless it asks: with
``IP_RECVERR`` (``IPV6_RECVERR``, both on a dual-stack socket) the kernel
queues each one, with the datagram that caused it, on the socket's error
queue, and sets the socket's pending error. :func:`drain` reads that queue
(``recvmsg(..., MSG_ERRQUEUE)``): each entry names the destination of the
failed datagram, so a port-unreachable error becomes a
:class:`~aiodisp.PeerUnreachable` for that peer (the dispatcher fails every
call in flight to it at once) and any other ICMP error a
:class:`~aiodisp.TransportError` with the peer and the kernel's errno.

The queue must be read as soon as the kernel reports the pending error: until
it is empty the socket polls as in error (a selector loop would spin, and
uvloop's own datagram transport crashes if its reader meets the error again),
and the pending error fails the next ``sendto`` to *any* peer. So both
transports drain it the moment a receive or a send fails with an error, and
a send that failed only because of a queued error is tried again.
(aiocoap's ``transports/udp6.py`` reads the same queue.)
"""

from __future__ import annotations

import errno
import socket
import struct
import sys
from typing import Any

from ..errors import PeerUnreachable, TransportError
from .addresses import received_ip6_address

__all__ = ["drain", "enable"]

#: Linux's option numbers (Python 3.11's socket module names neither).
IP_RECVERR = getattr(socket, "IP_RECVERR", 11)
IPV6_RECVERR = getattr(socket, "IPV6_RECVERR", 25)
MSG_ERRQUEUE = getattr(socket, "MSG_ERRQUEUE", 0x2000)
#: struct sock_extended_err: errno, origin, type, code, pad, info, data
_EXTENDED_ERR = struct.Struct("=IBBBBII")
_ORIGIN_ICMP = 2
_ORIGIN_ICMP6 = 3
#: Entries read per drain at most (the rest wait for the next error report).
_DRAIN_MAX = 256
_ANCILLARY = 512


def enable(sock: socket.socket) -> bool:
    """Ask the kernel to queue ICMP errors on ``sock`` (a UDP socket); False if it cannot."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        if sock.family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVERR, 1)
            # IPv4-mapped peers of a dual-stack socket: their ICMP errors are IPv4's
            if not sock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY):
                sock.setsockopt(socket.IPPROTO_IP, IP_RECVERR, 1)
        elif sock.family == socket.AF_INET:
            sock.setsockopt(socket.IPPROTO_IP, IP_RECVERR, 1)
        else:
            return False
    except OSError:
        return False
    return True


def drain(sock: socket.socket) -> list[Exception]:
    """Read the error queue of ``sock``: one error per entry (empty if it was empty)."""
    errors: list[Exception] = []
    v6 = sock.family == socket.AF_INET6
    for _ in range(_DRAIN_MAX):
        try:
            _data, ancillary, _flags, addr = sock.recvmsg(1, _ANCILLARY, MSG_ERRQUEUE)
        except (BlockingIOError, InterruptedError):
            break
        except OSError:
            break  # closed, or no error queue: nothing more to read
        errors.append(_error_of(ancillary, addr, v6))
    return errors


def _error_of(ancillary: list[tuple[int, int, bytes]], addr: Any, v6: bool) -> Exception:
    if v6 and isinstance(addr, tuple) and addr:
        addr = received_ip6_address(addr)
        if len(addr) == 4 and addr[2]:
            addr = (addr[0], addr[1], 0, addr[3])
    for level, kind, data in ancillary:
        if (level, kind) in ((socket.IPPROTO_IP, IP_RECVERR),
                             (socket.IPPROTO_IPV6, IPV6_RECVERR)) and len(data) >= 16:
            code, origin, icmp_type, icmp_code, _pad, _info, _data = _EXTENDED_ERR.unpack_from(
                data
            )
            if code == errno.ECONNREFUSED and origin in (_ORIGIN_ICMP, _ORIGIN_ICMP6):
                return PeerUnreachable(addr)
            what = "ICMP" if origin == _ORIGIN_ICMP else "ICMPv6" if origin == _ORIGIN_ICMP6 \
                else "the kernel"
            error = TransportError(
                code, f"a datagram to {addr!r} failed: {what} reported {_strerror(code)} "
                f"(type {icmp_type}, code {icmp_code})"
            )
            error.addr = addr
            return error
    error = TransportError(errno.EIO, f"a datagram to {addr!r} failed (no error details)")
    error.addr = addr
    return error


def _strerror(code: int) -> str:
    try:
        import os

        return os.strerror(code)
    except ValueError:
        return f"errno {code}"
