"""What the core hands the application: one incoming message with its size and sender."""

from __future__ import annotations

from typing import Any, Generic, NamedTuple, TypeVar

__all__ = ["Received"]

M = TypeVar("M")
#: An address in the form the transport reports senders.
Address = Any


class Received(NamedTuple, Generic[M]):
    """A message for the application: the message, its size in bytes and its sender.

    ``size`` is the length of the adapter's bytes (the datagram less any framing
    header); ``addr`` has the form of the sender's ``local_addr`` and can be passed
    back to any send call.
    """

    msg: M
    size: int
    addr: Address
