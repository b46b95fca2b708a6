"""The errors aiodisp raises. Every one is a :class:`DispatchError`.

Each error carries what is known about the failed call (the peer, the key, the
number of attempts) as attributes, and its message reads as a sentence.
"""

from __future__ import annotations

import errno
from collections.abc import Hashable
from typing import Any

__all__ = [
    "AdapterError",
    "DispatchError",
    "DispatcherClosed",
    "DuplicateKeyError",
    "MessageTooLarge",
    "PeerRejected",
    "PeerUnreachable",
    "ReliabilityUnavailable",
    "RequestTimeout",
    "TransportError",
]


class DispatchError(Exception):
    """The root of every error aiodisp raises."""


class RequestTimeout(DispatchError, TimeoutError):
    """A request, notify or recv_from call ran out of time or of retries.

    The message is written from the facts, which are kept as attributes:
    ``waited_for`` (what did not come: ``"reply"``, ``"ack"``, ``"message"``,
    ``"room"`` among the pending calls, ``"window"``: room in the peer's
    congestion window, ``"send room"`` in the transport's queue), ``key``,
    ``addr``, ``attempts`` (how many times the datagram was sent; 0 when it
    never was) and ``elapsed`` (seconds, when known).

    A timed-out request or notify may still have reached the peer, and the peer
    may have acted on it: only its reply or ACK was not seen in time. Retrying
    it is safe over ACK framing when the peer is an aiodisp dispatcher (a copy
    within the dedup window is answered from its reply cache), and otherwise
    only if the operation is idempotent.
    """

    def __init__(
        self,
        message: str | None = None,
        *,
        waited_for: str = "reply",
        key: Hashable | None = None,
        addr: Any = None,
        attempts: int = 0,
        elapsed: float | None = None,
        limit: int | None = None,
    ) -> None:
        self.waited_for = waited_for
        self.key = key
        self.addr = addr
        self.attempts = attempts
        self.elapsed = elapsed
        super().__init__(message if message is not None else self._sentence(limit))

    def _sentence(self, limit: int | None) -> str:
        took = f" in {self.elapsed:.3f} s" if self.elapsed is not None else ""
        call = "" if self.key is None else f" {self.key!r}"
        peer = "" if self.addr is None else f" to {self.addr!r}"
        if self.waited_for == "reply":
            return (f"no reply to request{call} from {self.addr!r} after "
                    f"{self.attempts} attempt(s){took}")
        if self.waited_for == "ack":
            return (f"no ACK for notify{call} from {self.addr!r} after "
                    f"{self.attempts} attempt(s){took}")
        if self.waited_for == "message":
            within = f" within {self.elapsed:g} s" if self.elapsed is not None else ""
            return f"no message arrived{within}"
        if self.waited_for == "room":
            among = f" among the {limit} pending calls" if limit is not None else ""
            return f"no room{among} for call{call}{peer} before its timeout{took}"
        if self.waited_for == "window":
            return (f"no room in the congestion window{peer} for call{call} before its "
                    f"timeout{took}")
        if self.waited_for == "send room":
            return (f"the transport's send queue stayed full until the timeout of call{call}"
                    f"{peer} (sent {self.attempts} time(s)){took}")
        if self.waited_for == "address":
            return f"could not resolve {self.addr!r} before the timeout{took}"
        return f"no {self.waited_for} for call{call}{peer}{took}"


class DispatcherClosed(DispatchError):
    """The dispatcher was closed before or while the call ran."""

    def __init__(self, message: str = "the dispatcher is closed") -> None:
        super().__init__(message)


class DuplicateKeyError(DispatchError, ValueError):
    """A request was made with a key that another pending request already uses.

    (Or, with an adapter's ``transaction_key``, a call with a transaction key
    another pending call's message has: ``what`` is then "transaction key".)
    """

    def __init__(self, key: Hashable, *, what: str = "key") -> None:
        call = "a request" if what == "key" else "a call"
        super().__init__(f"{call} with {what} {key!r} is already pending")
        self.key = key


class AdapterError(DispatchError):
    """The adapter failed on an outgoing message (the cause is chained)."""


class TransportError(DispatchError, OSError):
    """The transport could not send (the OS error is chained)."""

    @classmethod
    def cannot_send(cls, addr: Any, cause: BaseException) -> TransportError:
        """The error for a datagram to ``addr`` that failed with ``cause`` (chain it)."""
        if isinstance(cause, TransportError):
            return cause
        error = cls(f"cannot send to {addr!r}: {cause}")
        error.addr = addr
        return error

    addr: Any = None


class PeerUnreachable(TransportError):
    """Nothing listens at the peer's UDP port: the kernel reported ICMP port unreachable.

    request() and notify() to that peer fail with it as soon as the kernel's
    report arrives (Linux: IP_RECVERR / IPV6_RECVERR), not at their timeout;
    every call in flight to the peer fails at once. ``addr`` is the peer,
    ``key`` the failed call's key (None in the transport's own report), and
    ``errno`` is ECONNREFUSED.
    """

    def __init__(self, addr: Any, *, key: Hashable | None = None, attempts: int = 0) -> None:
        call = "" if key is None else f" (call {key!r}, sent {attempts} time(s))"
        super().__init__(
            errno.ECONNREFUSED,
            f"nothing listens at {addr!r}: the kernel reported ICMP port unreachable{call}",
        )
        self.addr = addr
        self.key = key
        self.attempts = attempts

    def for_call(self, key: Hashable | None, attempts: int) -> PeerUnreachable:
        """The error for one call that this report fails."""
        return PeerUnreachable(self.addr, key=key, attempts=attempts)


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


class PeerRejected(DispatchError):
    """The peer refused the call: the adapter classified its answer as ``Kind.REJECT``.

    ``msg`` is the peer's message (a CoAP Reset, say); ``key`` the key of the
    call it failed and ``addr`` the peer. Raised by request() and notify() as
    soon as that message arrives, not at the call's timeout.
    """

    def __init__(self, msg: Any, *, key: Hashable | None = None, addr: Any = None) -> None:
        self.msg = msg
        self.key = key
        self.addr = addr
        call = "" if key is None else f" {key!r}"
        peer = "the peer" if addr is None else f"{addr!r}"
        super().__init__(f"{peer} rejected call{call}: {msg!r}")
