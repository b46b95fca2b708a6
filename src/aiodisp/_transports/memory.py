"""An in-memory datagram network between transports, with seeded fault injection.

The test bench for everything about loss: the network's :class:`Link` drops,
duplicates, reorders, delays and corrupts datagrams, decided by
:class:`~aiodisp._transports.faults.Faults` (the same decisions
:class:`~aiodisp._transports.faults.FaultyTransport` makes around any other
transport) from one seeded random source, so a failing run can be replayed exactly.
"""

from __future__ import annotations

import asyncio
import itertools

from ..errors import TransportError
from .base import Address, DatagramSink
from .faults import Faults, Link, LinkCounters

__all__ = ["MEMORY_MAX", "Link", "LinkCounters", "MemoryNetwork", "MemoryTransport"]

MEMORY_MAX = 65507
_ids = itertools.count(1)


class MemoryNetwork:
    """Memory transports that can reach each other, and the link between them."""

    def __init__(self, link: Link | None = None) -> None:
        self.link = link if link is not None else Link()
        self.faults = Faults(self.link)
        self.rng = self.faults.rng
        self.endpoints: dict[Address, MemoryTransport] = {}

    def transport(self, *, max_datagram_size: int = MEMORY_MAX) -> MemoryTransport:
        addr = ("memory", next(_ids))
        t = MemoryTransport(self, addr, max_datagram_size)
        self.endpoints[addr] = t
        return t


class MemoryTransport:
    """One end of a :class:`MemoryNetwork`; its address is ``("memory", n)``."""

    def __init__(self, network: MemoryNetwork, addr: Address, max_datagram_size: int) -> None:
        self._net = network
        self._addr = addr
        self._max = max_datagram_size
        self._loop = asyncio.get_running_loop()
        self._sink: DatagramSink | None = None
        self._closed = False
        self.counters = LinkCounters()

    @property
    def local_addr(self) -> Address:
        return self._addr

    @property
    def reliable(self) -> bool:
        return self._net.link.lossless

    @property
    def max_datagram_size(self) -> int:
        return self._max

    def start(self, sink: DatagramSink) -> None:
        self._sink = sink

    def send(self, data: bytes, addr: Address) -> bool:
        if self._closed:
            raise TransportError("the transport is closed")
        if len(data) > self._max:
            raise TransportError(f"a {len(data)}-byte datagram exceeds the link's {self._max}")
        counters = self.counters
        counters.sent += 1
        peer = self._net.endpoints.get(addr)
        if peer is None:
            counters.unroutable += 1
            return False
        data, delays = self._net.faults.apply(data, counters)
        for delay in delays:
            peer._arrive(data, self._addr, delay)
        return False

    def _arrive(self, data: bytes, src: Address, delay: float) -> None:
        # Datagrams still in flight when a transport closes are dropped on arrival.
        if delay <= 0:
            self._loop.call_soon(self._deliver, data, src)
        else:
            self._loop.call_later(delay, self._deliver, data, src)

    def _deliver(self, data: bytes, src: Address) -> None:
        if not self._closed and self._sink is not None:
            self._sink.datagram_received(data, src)

    async def wait_writable(self) -> None:
        return None

    async def resolve(self, addr: Address) -> Address:
        return addr

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._net.endpoints.pop(self._addr, None)
