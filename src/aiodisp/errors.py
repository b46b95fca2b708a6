"""The errors aiodisp raises. Every one is a :class:`DispatchError`.

Each error carries what is known about the failed call (the peer, the key, the
number of attempts) as attributes, and its message reads as a sentence.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

__all__ = [
    "AdapterError",
    "DispatchError",
    "DispatcherClosed",
    "DuplicateKeyError",
    "MessageTooLarge",
    "ReliabilityUnavailable",
    "RequestTimeout",
    "TransportError",
]


class DispatchError(Exception):
    """The root of every error aiodisp raises."""


class RequestTimeout(DispatchError, TimeoutError):
    """A request, notify or recv_from call ran out of time or of retries.

    ``attempts`` is how many times the datagram was sent (0 for recv_from).
    """

    def __init__(
        self,
        message: str,
        *,
        key: Hashable | None = None,
        addr: Any = None,
        attempts: int = 0,
    ) -> None:
        super().__init__(message)
        self.key = key
        self.addr = addr
        self.attempts = attempts


class DispatcherClosed(DispatchError):
    """The dispatcher was closed before or while the call ran."""

    def __init__(self, message: str = "the dispatcher is closed") -> None:
        super().__init__(message)


class DuplicateKeyError(DispatchError, ValueError):
    """A request was made with a key that another pending request already uses."""

    def __init__(self, key: Hashable) -> None:
        super().__init__(f"a request with key {key!r} is already pending")
        self.key = key


class AdapterError(DispatchError):
    """The adapter failed on an outgoing message (the cause is chained)."""


class TransportError(DispatchError, OSError):
    """The transport could not send (the OS error is chained)."""


class MessageTooLarge(DispatchError, ValueError):
    """The encoded message does not fit in one datagram of the transport."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(
            f"the datagram would be {size} bytes, more than the transport's limit of {limit}"
        )
        self.size = size
        self.limit = limit


class ReliabilityUnavailable(DispatchError):
    """notify() was asked of an unreliable transport with raw framing."""
