"""The interface between a Dispatcher and the carrier of its datagrams.

Bring your own carrier (a SCION or QUIC datagram socket, a serial link) by
writing a class with these members; subclassing is not needed.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

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
        :class:`~aiodisp.TransportError` when the datagram cannot be sent at all.
        """

    async def wait_writable(self) -> None:
        """Return once the send queue is below its low-water mark (or closed)."""

    async def resolve(self, addr: Address) -> Address:
        """Turn a user-given address into the form datagrams arrive from."""

    def close(self) -> None:
        """Stop reporting, drop what is queued and release the carrier; idempotent."""
