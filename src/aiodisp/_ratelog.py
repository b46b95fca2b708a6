"""Logging that a flood cannot turn into a flood of log lines."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

__all__ = ["RateLimitedLog"]


class RateLimitedLog:
    """Logs at most ``burst`` messages per ``interval`` seconds for each reason.

    What is held back is counted and summed up in the next message that passes.
    """

    __slots__ = ("_burst", "_clock", "_interval", "_state", "logger")

    def __init__(
        self,
        logger: logging.Logger,
        *,
        interval: float = 10.0,
        burst: int = 5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self._interval = interval
        self._burst = burst
        self._clock = clock
        # reason -> [window start, messages logged in it, messages held back]
        self._state: dict[str, list[float]] = {}

    def __call__(self, level: int, reason: str, msg: str, *args: object) -> bool:
        """Log ``msg % args`` unless ``reason`` is over its budget; True if logged."""
        if not self.logger.isEnabledFor(level):
            return False
        now = self._clock()
        state = self._state.get(reason)
        if state is None:
            state = self._state[reason] = [now, 0, 0]
        elif now - state[0] >= self._interval:
            state[0] = now
            state[1] = 0
        if state[1] >= self._burst:
            state[2] += 1
            return False
        state[1] += 1
        held = int(state[2])
        state[2] = 0
        if held:
            msg += " (%d more %s messages held back)"
            args = (*args, held, reason)
        self.logger.log(level, msg, *args)
        return True

    def flush(self, level: int = logging.WARNING) -> None:
        """Log what is still held back, one line per reason (e.g. when closing)."""
        for reason, state in self._state.items():
            held = int(state[2])
            if held and self.logger.isEnabledFor(level):
                self.logger.log(level, "%d more %s messages held back", held, reason)
            state[2] = 0
