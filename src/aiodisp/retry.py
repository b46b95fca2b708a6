"""Retransmission policy for request() and notify()."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["RetryPolicy"]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how fast a request or notify is sent again.

    The first wait is ``initial_timeout`` seconds, or, when it is ``None``, the
    retransmission timeout estimated from the round-trip times measured to the
    peer (RFC 6298, with Karn's rule: only first-attempt exchanges are sampled).
    Each further wait is ``backoff`` times the one before, capped at
    ``max_interval`` and spread by +/- ``jitter`` (a fraction) so that many
    senders do not retransmit in lockstep. After ``max_attempts`` sends
    (``None``: no limit but the call's timeout) the last wait ends the call with
    :class:`~aiodisp.RequestTimeout`.
    """

    initial_timeout: float | None = None
    backoff: float = 2.0
    max_attempts: int | None = 8
    jitter: float = 0.1
    max_interval: float = 5.0

    def __post_init__(self) -> None:
        if self.initial_timeout is not None and not self.initial_timeout > 0:
            raise ValueError("initial_timeout must be positive or None")
        if not self.backoff >= 1.0:
            raise ValueError("backoff must be at least 1.0")
        if self.max_attempts is not None and self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1 or None")
        if not 0.0 <= self.jitter < 1.0:
            raise ValueError("jitter must be in [0, 1)")
        if not self.max_interval > 0:
            raise ValueError("max_interval must be positive")


#: What notify() uses over ACK framing when neither the call nor the
#: dispatcher names a policy: adaptive first wait, doubling up to one second,
#: retries until the timeout.
ADAPTIVE = RetryPolicy(initial_timeout=None, max_attempts=None, max_interval=1.0)
