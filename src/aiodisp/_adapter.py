"""The MessageAdapter protocol: what a dispatcher needs to know about the application's messages.

An adapter is duck-typed: any object with the three required methods works,
subclassing is not needed. ``M`` is the application's message type; it flows
from the adapter to every call of the dispatcher built on it, so
``open_udp(adapter: MessageAdapter[M]) -> Dispatcher[M]`` and ``request()``
takes and returns an ``M``.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Protocol, TypeVar

__all__ = ["MessageAdapter"]

M = TypeVar("M")


class MessageAdapter(Protocol[M]):
    """Turns messages of type ``M`` into bytes and back, and says which ones pair up.

    Required:

    * ``msg_to_raw(msg) -> bytes``: the bytes of an outgoing message (an exception
      becomes :class:`~aiodisp.AdapterError`, the cause chained);
    * ``raw_to_msg(raw) -> M``: the message in an incoming datagram; it may raise
      on bad bytes (the datagram is dropped and counted in ``stats.decode_errors``);
    * ``msg_key(msg) -> Hashable``: the key that pairs a request with its reply.

    Optional (used when the adapter has it):

    * ``is_reply(msg) -> bool``: whether an incoming message is a reply. Without
      it, a message is a reply exactly when its key matches a pending request
      sent to its sender.
    """

    def msg_to_raw(self, msg: M, /) -> bytes: ...

    def raw_to_msg(self, raw: bytes, /) -> M: ...

    def msg_key(self, msg: M, /) -> Hashable: ...
