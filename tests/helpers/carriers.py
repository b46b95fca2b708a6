"""A carrier of our own, as a user would bring one: every send is recorded, and the
test decides whether the next sends succeed, fail or report a full queue."""

from __future__ import annotations

import asyncio
import errno
from typing import Any

from aiodisp import DatagramSink, TransportError

__all__ = ["ScriptedCarrier"]


class ScriptedCarrier:
    """A :class:`aiodisp.DatagramTransport` whose send outcome the test sets.

    ``mode`` is ``"ok"`` (taken), ``"fail"`` (TransportError for EBADF: never
    transient), ``"transient"`` (TransportError for ENOBUFS: a loss the retry
    policy repairs) or ``"blocked"`` (taken, but the queue is past its mark until
    :meth:`drain`).
    """

    def __init__(self, addr: Any = "me", *, max_datagram_size: int = 1500) -> None:
        self.addr = addr
        self.mode = "ok"
        self.sent: list[tuple[bytes, Any]] = []
        self.sink: DatagramSink | None = None
        self.closed = False
        self._max = max_datagram_size
        self._writable = asyncio.Event()
        self._writable.set()

    @property
    def local_addr(self) -> Any:
        return self.addr

    @property
    def reliable(self) -> bool:
        return False

    @property
    def max_datagram_size(self) -> int:
        return self._max

    def start(self, sink: DatagramSink) -> None:
        self.sink = sink

    def send(self, data: bytes, addr: Any) -> bool:
        if self.mode in ("fail", "transient"):
            code = errno.EBADF if self.mode == "fail" else errno.ENOBUFS
            cause = OSError(code, "scripted failure")
            raise TransportError.cannot_send(addr, cause) from cause
        self.sent.append((data, addr))
        if self.mode == "blocked":
            self._writable.clear()
            return True
        return False

    def drain(self) -> None:
        self.mode = "ok"
        self._writable.set()

    async def wait_writable(self) -> None:
        await self._writable.wait()

    async def resolve(self, addr: Any) -> Any:
        return addr

    def close(self) -> None:
        self.closed = True
        self._writable.set()
