"""The interface between a Dispatcher and the carrier of its datagrams.

Bring your own carrier (a SCION or QUIC datagram socket, a serial link) by
writing a class with the members of :class:`DatagramTransport`; subclassing is
not needed. A carrier that queues per destination can add the members of
:class:`FlowControlledTransport`, which a dispatcher uses when present.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

__all__ = ["Address", "DatagramSink", "DatagramTransport", "FlowControlledTransport"]

Address = Any


@runtime_checkable
class DatagramSink(Protocol):
    """What a transport reports to (the Dispatcher)."""

    def datagram_received(self, data: bytes, addr: Address) -> None:
        """One datagram arrived from ``addr``."""

    def error_received(self, exc: Exception) -> None:
        """The carrier reported an error (an ICMP error, a failed background send)."""


@runtime_checkable
class DatagramTransport(Protocol):
    """A datagram carrier driven by a :class:`~aiodisp.Dispatcher`.

    ``reliable`` says whether a datagram handed to :meth:`send` reaches the
    peer's socket without loss (a Unix datagram socket: a full peer makes the
    sender wait instead of dropping). ``max_datagram_size`` is the largest
    datagram :meth:`send` accepts and :meth:`start` delivers.
    """

    @property
    def local_addr(self) -> Address:
        """Where peers reach this transport, in the form received datagrams carry."""

    @property
    def reliable(self) -> bool: ...

    @property
    def max_datagram_size(self) -> int: ...

    def start(self, sink: DatagramSink) -> None:
        """Begin reporting received datagrams and errors to ``sink``."""

    def send(self, data: bytes, addr: Address) -> bool:
        """Send one datagram, or queue it if the carrier cannot take it now.

        Returns True when the caller should ``await wait_writable()`` before
        sending more (the queue is past its high-water mark). Raises
        :class:`~aiodisp.TransportError` when the datagram cannot be sent at
        all, and for every failure: a malformed address, a peer with no address
        (a datagram from an unbound Unix socket), a full queue — never
        ``TypeError`` or ``ValueError``. Its ``errno``, where set, says which
        (EINVAL, EDESTADDRREQ, EAGAIN, or the kernel's own).
        """

    async def wait_writable(self) -> None:
        """Return once the send queue is below its low-water mark (or closed)."""

    async def resolve(self, addr: Address) -> Address:
        """Turn a user-given address into the form datagrams arrive from.

        Equal peers give equal addresses: the form received datagrams carry
        (see ``aiodisp._transports.addresses``). Raises
        :class:`~aiodisp.TransportError` for a malformed or unresolvable
        address. Must be cancellable: a slow name look-up ends when the
        caller is cancelled.
        """

    def close(self) -> None:
        """Stop reporting, drop what is queued and release the carrier; idempotent."""


@runtime_checkable
class FlowControlledTransport(DatagramTransport, Protocol):
    """The optional members of a transport that queues per destination.

    :class:`~aiodisp._transports.sockets.SocketTransport` (UDP and Unix) and
    :class:`~aiodisp._transports.loop_datagram.LoopDatagramTransport` have
    them; a dispatcher falls back to :meth:`send` and ``wait_writable()``
    where a transport lacks them.
    """

    def send_best_effort(self, data: bytes, addr: Address) -> bool:
        """Send a datagram its sender can afford to lose (an ACK, a cached reply,
        a reply sent by a handler): never queued past the destination's
        high-water mark. Returns False when it was dropped for that reason;
        raises :class:`~aiodisp.TransportError` as :meth:`send` does otherwise.
        """

    async def wait_writable(self, addr: Address | None = None) -> None:
        """Return once ``addr``'s send queue is below its low-water mark (or the
        transport is closed). Without ``addr``: once every destination's is."""
