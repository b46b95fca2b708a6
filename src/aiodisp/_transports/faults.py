"""Seeded fault injection for datagrams: one set of decisions for every carrier.

:class:`Link` says what goes wrong (loss, corruption, duplication, reordering,
delay); :class:`Faults` decides, datagram by datagram and from one seeded
random source, what crossing the link does to each one, so a failing run can
be replayed exactly. Two carriers use it: the in-memory network
(:mod:`aiodisp._transports.memory`) and :class:`FaultyTransport`, which wraps
any :class:`~aiodisp.DatagramTransport` (``aiodisp bench --loss`` puts one
around a UDP socket).
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass
from typing import Any

from ..errors import TransportError
from .base import Address, DatagramSink, DatagramTransport

__all__ = ["FaultyTransport", "Faults", "Link", "LinkCounters"]


@dataclass(frozen=True, slots=True)
class Link:
    """Faults applied to every datagram crossing a link, in both directions.

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
    """What a link did to the datagrams one transport sent (or received)."""

    sent: int = 0
    lost: int = 0
    duplicated: int = 0
    reordered: int = 0
    corrupted: int = 0
    unroutable: int = 0


_LOST: tuple[float, ...] = ()


class Faults:
    """The decisions of a :class:`Link`, drawn from one random source (seeded by the link)."""

    __slots__ = ("_once", "link", "rng")

    def __init__(self, link: Link, rng: random.Random | None = None) -> None:
        self.link = link
        self.rng = rng if rng is not None else random.Random(link.seed)
        self._once = (link.delay,)

    def apply(self, data: bytes, counters: LinkCounters) -> tuple[bytes, tuple[float, ...]]:
        """What crossing the link does to one datagram, counted in ``counters``.

        Returns the bytes to deliver (corrupted, maybe) and the delay in seconds
        of each copy to deliver: none when the datagram is lost, two when it is
        duplicated. ``counters.sent`` is the caller's to count.
        """
        link = self.link
        rng = self.rng
        if link.loss and rng.random() < link.loss:
            counters.lost += 1
            return data, _LOST
        if link.corrupt and data and rng.random() < link.corrupt:
            counters.corrupted += 1
            buf = bytearray(data)
            buf[rng.randrange(len(buf))] ^= 1 << rng.randrange(8)
            data = bytes(buf)
        copies = 1
        if link.duplicate and rng.random() < link.duplicate:
            counters.duplicated += 1
            copies = 2
        if not link.reorder:
            return data, self._once if copies == 1 else self._once * 2
        delays = []
        for _ in range(copies):
            delay = link.delay
            if rng.random() < link.reorder:
                counters.reordered += 1
                delay += rng.random() * link.reorder_window
            delays.append(delay)
        return data, tuple(delays)


class FaultyTransport:
    """Any :class:`~aiodisp.DatagramTransport` with a :class:`Link`'s faults on top.

    Every datagram sent (and, with ``incoming=True``, every datagram received)
    goes through the same :class:`Faults` first, from one random source, so a
    seeded run makes the same decisions as the memory network does for the
    same sequence of datagrams. ``counters`` counts what happened to the
    datagrams sent, ``received_counters`` to those received.
    """

    def __init__(
        self,
        inner: DatagramTransport,
        link: Link,
        *,
        rng: random.Random | None = None,
        outgoing: bool = True,
        incoming: bool = True,
    ) -> None:
        self._inner = inner
        self._faults = Faults(link, rng)
        self._outgoing = outgoing
        self._incoming = incoming
        self._loop = asyncio.get_running_loop()
        self._sink: DatagramSink | None = None
        self._timers: set[asyncio.TimerHandle] = set()
        self._closed = False
        self.counters = LinkCounters()
        self.received_counters = LinkCounters()

    @classmethod
    def over_udp(
        cls,
        local_addr: tuple[Any, ...],
        link: Link,
        *,
        buffer_size: int | None,
        **options: Any,
    ) -> FaultyTransport:
        """A faulty transport around a UDP socket bound to ``local_addr``.

        ``buffer_size`` sets the socket's kernel buffers (None: the kernel's
        default). The socket is read through ``loop.add_reader`` on any loop;
        ``options`` are this class's (``rng``, ``outgoing``, ``incoming``).
        """
        from .sockets import SocketTransport, make_udp_socket

        sock, limit = make_udp_socket(local_addr, buffer_size=buffer_size)
        try:
            inner = SocketTransport(sock, reliable=False, max_datagram_size=limit)
            return cls(inner, link, **options)
        except BaseException:
            sock.close()
            raise

    # -- the DatagramTransport interface

    @property
    def inner(self) -> DatagramTransport:
        """The transport under the faults."""
        return self._inner

    @property
    def local_addr(self) -> Address:
        return self._inner.local_addr

    @property
    def reliable(self) -> bool:
        return self._inner.reliable and self._faults.link.lossless

    @property
    def max_datagram_size(self) -> int:
        return self._inner.max_datagram_size

    def start(self, sink: DatagramSink) -> None:
        self._sink = sink
        self._inner.start(self)

    def send(self, data: bytes, addr: Address) -> bool:
        if not self._outgoing:
            return self._inner.send(data, addr)
        if self._closed:
            raise TransportError("the transport is closed")
        self.counters.sent += 1
        data, delays = self._faults.apply(data, self.counters)
        busy = False
        for delay in delays:
            if delay > 0:
                self._later(delay, self._send_late, data, addr)
            elif self._inner.send(data, addr):
                busy = True
        return busy

    def _send_late(self, data: bytes, addr: Address) -> None:
        try:
            self._inner.send(data, addr)
        except TransportError as exc:
            if self._sink is not None:
                self._sink.error_received(exc)

    # -- what the inner transport reports

    def datagram_received(self, data: bytes, addr: Address) -> None:
        sink = self._sink
        if sink is None or self._closed:
            return
        if not self._incoming:
            sink.datagram_received(data, addr)
            return
        self.received_counters.sent += 1
        data, delays = self._faults.apply(data, self.received_counters)
        for delay in delays:
            if delay > 0:
                self._later(delay, sink.datagram_received, data, addr)
            else:
                sink.datagram_received(data, addr)

    def error_received(self, exc: Exception) -> None:
        if self._sink is not None and not self._closed:
            self._sink.error_received(exc)

    def _later(self, delay: float, fn: Any, data: bytes, addr: Address) -> None:
        timers = self._timers

        def fire() -> None:
            timers.discard(handle)
            if not self._closed:
                fn(data, addr)

        handle = self._loop.call_later(delay, fire)
        timers.add(handle)

    async def wait_writable(self) -> None:
        await self._inner.wait_writable()

    async def resolve(self, addr: Address) -> Address:
        return await self._inner.resolve(addr)

    def close(self) -> None:
        """Drop the datagrams still held back and close the inner transport."""
        if self._closed:
            return
        self._closed = True
        for handle in self._timers:
            handle.cancel()
        self._timers.clear()
        self._inner.close()
