"""What an incoming message is, as an adapter's optional ``classify(msg)`` says."""

from __future__ import annotations

import enum

__all__ = ["Kind"]


class Kind(enum.Enum):
    """The answer of ``classify(msg)``: what the dispatcher does with an incoming message.

    * ``MESSAGE``: for the application (``recv_from``, ``async for``, ``serve``);
    * ``REPLY``: completes the pending request whose key is ``msg_key(msg)``;
    * ``ACK``: the peer has the call whose outgoing message had the transaction
      key ``transaction_key(msg)``: a notify completes, a request stops
      retransmitting and keeps waiting for its reply;
    * ``REJECT``: the peer refused that call: it fails at once with
      :class:`~aiodisp.PeerRejected`;
    * ``DROP``: nothing to do (counted in ``stats.ignored``, not logged).
    """

    MESSAGE = "message"
    REPLY = "reply"
    ACK = "ack"
    REJECT = "reject"
    DROP = "drop"
