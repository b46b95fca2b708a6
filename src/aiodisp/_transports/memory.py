"""An in-memory datagram link between transports, with seeded fault injection.

The test bench for everything about loss: :class:`Link` drops, duplicates,
reorders, delays and corrupts datagrams from one seeded random source, so a
failing run can be replayed exactly.
"""

from __future__ import annotations

import asyncio
import itertools
import random
from dataclasses import dataclass

from ..errors import TransportError
from .base import Address, DatagramSink

MEMORY_MAX = 65507
_ids = itertools.count(1)


@dataclass(frozen=True, slots=True)
class Link:
    """Faults applied to every datagram crossing a memory link, in both directions.

    Probabilities are per datagram: ``loss`` drops it, ``corrupt`` flips one of
    its bytes, ``duplicate`` delivers a second copy, ``reorder`` holds it back
    by a random extra time up to ``reorder_window`` seconds so later datagrams
    overtake it. ``delay`` is the one-way latency in seconds. ``seed`` makes
    the faults repeatable.
    """

    loss: float = 0.0
    duplicate: float = 0.0
    reorder: float = 0.0
    delay: float = 0.0
    corrupt: float = 0.0
    reorder_window: float = 0.005
    seed: int | None = None

    def __post_init__(self) -> None:
        for name in ("loss", "duplicate", "reorder", "corrupt"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"Link.{name} must be a probability in [0, 1], not {value!r}")
        if self.delay < 0 or self.reorder_window < 0:
            raise ValueError("Link delays must not be negative")

    @property
    def lossless(self) -> bool:
        return self.loss == 0.0 and self.corrupt == 0.0


@dataclass(slots=True)
class LinkCounters:
    """What a memory link did to the datagrams one transport sent."""

    sent: int = 0
    lost: int = 0
    duplicated: int = 0
    reordered: int = 0
    corrupted: int = 0
    unroutable: int = 0


class MemoryNetwork:
    """Memory transports that can reach each other, and the link between them."""

    def __init__(self, link: Link | None = None) -> None:
        self.link = link if link is not None else Link()
        self.rng = random.Random(self.link.seed)
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
        link = self._net.link
        rng = self._net.rng
        if link.loss and rng.random() < link.loss:
            counters.lost += 1
            return False
        if link.corrupt and data and rng.random() < link.corrupt:
            counters.corrupted += 1
            buf = bytearray(data)
            buf[rng.randrange(len(buf))] ^= 1 << rng.randrange(8)
            data = bytes(buf)
        copies = 1
        if link.duplicate and rng.random() < link.duplicate:
            counters.duplicated += 1
            copies = 2
        for _ in range(copies):
            delay = link.delay
            if link.reorder and rng.random() < link.reorder:
                counters.reordered += 1
                delay += rng.random() * link.reorder_window
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
