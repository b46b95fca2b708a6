"""Answering from the address a peer reached us at (IP_PKTINFO / IPV6_PKTINFO).

A socket bound to a wildcard address (``0.0.0.0``, ``::``) receives datagrams
sent to any of the host's addresses, but a plain ``sendto`` lets the kernel
pick the reply's source by routing, and that is often another address than
the one the peer called (a secondary address, ``127.0.0.2``, the IPv4 side of
a dual-stack socket): the peer's source check then drops the reply.

With IP_PKTINFO (IPv4) or IPV6_RECVPKTINFO (IPv6, which also covers the
IPv4-mapped side of a dual-stack socket) on, every datagram arrives with the
local address it was sent to. :class:`SourceTable` remembers, per peer, the
control message that makes ``sendmsg`` send from that address.
"""

from __future__ import annotations

import socket
import struct

from .base import Address

__all__ = ["ANCILLARY_SIZE", "Cmsg", "IP_PKTINFO", "SOURCES_MAX", "SourceTable", "enable"]

#: Linux's IP_PKTINFO (Python's socket module has it from 3.12 on).
IP_PKTINFO: int = getattr(socket, "IP_PKTINFO", 8)

#: Enough for one in_pktinfo or in6_pktinfo control message.
ANCILLARY_SIZE = socket.CMSG_SPACE(20)

#: Control messages to send with, per peer: past this many peers the oldest is
#: forgotten (its replies then leave from the kernel's choice of source).
SOURCES_MAX = 65536
_CMSGS_MAX = 1024

Cmsg = list[tuple[int, int, bytes]]
_NO_SOURCE: Cmsg = []  # the kernel's choice (a multicast destination cannot be a source)
_V4_MAPPED_PREFIX = bytes(10) + b"\xff\xff"


def enable(sock: socket.socket) -> None:
    """Ask the kernel for the destination address of every datagram ``sock`` receives."""
    if sock.family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVPKTINFO, 1)
    else:
        sock.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)


class SourceTable:
    """Per peer, the control message that sends from the address the peer last reached.

    ``sources`` is read on the send path and written on the receive path (see
    :meth:`SocketTransport._read_pktinfo`); ``cmsg_for`` turns a received
    control message into the one to send with, cached by its bytes.
    """

    __slots__ = ("cmsgs", "sources")

    def __init__(self) -> None:
        self.sources: dict[Address, Cmsg] = {}
        self.cmsgs: dict[bytes, Cmsg] = {}

    def cmsg_for(self, level: int, kind: int, data: bytes) -> Cmsg:
        cmsg = self.cmsgs.get(data)
        if cmsg is None:
            cmsg = _reply_cmsg(level, kind, data)
            if len(self.cmsgs) >= _CMSGS_MAX:
                self.cmsgs.clear()
            self.cmsgs[data] = cmsg
        return cmsg

    def learn(self, addr: Address, cmsg: Cmsg) -> None:
        sources = self.sources
        if len(sources) >= SOURCES_MAX:
            del sources[next(iter(sources))]
        sources[addr] = cmsg

    def source_of(self, addr: Address) -> str | None:
        """The local address replies to ``addr`` leave from (None: the kernel's choice)."""
        cmsg = self.sources.get(addr)
        if not cmsg:
            return None
        level, _, data = cmsg[0]
        if level == socket.IPPROTO_IP:
            return socket.inet_ntop(socket.AF_INET, data[4:8])
        if data[:12] == _V4_MAPPED_PREFIX:
            return socket.inet_ntop(socket.AF_INET, data[12:16])
        return socket.inet_ntop(socket.AF_INET6, data[:16])


def _reply_cmsg(level: int, kind: int, data: bytes) -> Cmsg:
    if level == socket.IPPROTO_IP and kind == IP_PKTINFO and len(data) >= 12:
        # struct in_pktinfo {ifindex; spec_dst; addr}: spec_dst is the local address
        # the datagram reached (for a broadcast: the interface's own address).
        return [(socket.IPPROTO_IP, IP_PKTINFO, struct.pack("=I4s4s", 0, data[4:8], bytes(4)))]
    if level == socket.IPPROTO_IPV6 and kind == socket.IPV6_PKTINFO and len(data) >= 20:
        # struct in6_pktinfo {addr; ifindex}; the interface matters for link-local only.
        dst = data[:16]
        if dst[0] == 0xFF:
            return _NO_SOURCE
        link_local = dst[0] == 0xFE and dst[1] & 0xC0 == 0x80
        ifindex = data[16:20] if link_local else bytes(4)
        return [(socket.IPPROTO_IPV6, socket.IPV6_PKTINFO, dst + ifindex)]
    return _NO_SOURCE
