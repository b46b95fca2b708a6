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

    Optional (each used when the adapter has it):

    * ``is_reply(msg) -> bool``: whether an incoming message is a reply. Without
      it, a message is a reply exactly when its key matches a pending request
      sent to its sender.

    For a protocol with a message layer of its own under the request/reply one
    (CoAP's Message IDs under its tokens), used with ``framing="raw"`` (see
    docs/protocols.md):

    * ``classify(msg) -> aiodisp.Kind`` (supersedes ``is_reply``): what an
      incoming message is. ``MESSAGE``: for the application (``recv_from``,
      ``serve``). ``REPLY``: completes the pending request with key
      ``msg_key(msg)`` (from the address it went to). ``ACK``: the peer has the
      call whose outgoing message had the transaction key
      ``transaction_key(msg)``: a notify completes, a request stops
      retransmitting and keeps waiting for its reply. ``REJECT``: the peer
      refused that call: it fails at once with :class:`~aiodisp.PeerRejected`
      (whose ``.msg`` is this message). ``DROP``: nothing to do (counted in
      ``stats.ignored``, not logged as an error).
    * ``transaction_key(msg) -> Hashable | None``: the message-layer id of a
      datagram (CoAP's Message ID; None for one that has none). A ``MESSAGE``
      is delivered once per (sender, transaction key) within the dedup window
      (``dedup_ttl``, ``dedup_capacity``): a copy is dropped (``duplicates``)
      and the reply the application sent for the first is sent again (the
      reply cache, ``reply_cache_bytes``). ``ACK`` and ``REJECT`` messages find
      their call by it. Only ``MESSAGE`` messages are recorded: a ``REPLY`` may carry
      an id of our own (CoAP's piggybacked ACK). With ``classify`` it also makes
      ``notify()`` reliable over raw framing: the message is retransmitted until
      an ``ACK`` or ``REJECT`` with its transaction key comes from the peer.
    * ``ack_for(msg) -> message | None``: a message sent back to the sender as
      soon as the dispatcher has taken ``msg`` (CoAP's empty ACK, or the RST
      answering a ping): for every datagram classified ``MESSAGE``, ``REPLY``
      or ``DROP``, duplicates and replies that complete nothing included, but
      not for a message dropped because the queue is full (its sender retries).
      None sends nothing.

    An adapter may raise in any of them: the datagram is dropped and counted in
    ``stats.decode_errors``. Under ACK framing the framing's header does this
    work itself, and of the three only ``classify`` is used, as ``is_reply``
    (``REPLY`` is a reply, any other kind a message for the application).
    """

    def msg_to_raw(self, msg: M, /) -> bytes: ...

    def raw_to_msg(self, raw: bytes, /) -> M: ...

    def msg_key(self, msg: M, /) -> Hashable: ...
