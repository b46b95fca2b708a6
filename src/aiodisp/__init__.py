"""aiodisp: an asyncio message dispatcher for request/reply protocols over datagrams.

Give it an adapter (``msg_to_raw``, ``raw_to_msg``, ``msg_key`` and optionally
``is_reply``) and a transport; it sends requests and wakes the caller when the
reply with the same key comes back, sends notifications reliably (ACK and
retransmit over UDP) or unreliably, and hands every other incoming message to
:meth:`Dispatcher.recv_from` with its size and sender.
"""

import logging as _logging

from ._adapter import MessageAdapter
from ._core.budget import RetryBudget
from ._core.endpoint import Received
from ._core.framing import Framing
from ._dispatcher import DEFAULT_TIMEOUT, Dispatcher
from ._kind import Kind
from ._open import open_memory_pair, open_udp, open_unix
from ._serve import Server, ServeStats
from ._transports.base import DatagramSink, DatagramTransport
from ._transports.memory import Link
from .errors import (
    AdapterError,
    DispatcherClosed,
    DispatchError,
    DuplicateKeyError,
    MessageTooLarge,
    PeerRejected,
    PeerUnreachable,
    ReliabilityUnavailable,
    RequestTimeout,
    TransportError,
)
from .retry import RetryPolicy
from .stats import Stats

__version__ = "0.1.0"

# A library logs; the application decides where it goes (no output by default).
_logging.getLogger("aiodisp").addHandler(_logging.NullHandler())

__all__ = [
    "DEFAULT_TIMEOUT",
    "AdapterError",
    "DatagramSink",
    "DatagramTransport",
    "DispatchError",
    "Dispatcher",
    "DispatcherClosed",
    "DuplicateKeyError",
    "Framing",
    "Kind",
    "Link",
    "MessageAdapter",
    "MessageTooLarge",
    "PeerRejected",
    "PeerUnreachable",
    "Received",
    "ReliabilityUnavailable",
    "RequestTimeout",
    "RetryBudget",
    "RetryPolicy",
    "ServeStats",
    "Server",
    "Stats",
    "TransportError",
    "__version__",
    "open_memory_pair",
    "open_udp",
    "open_unix",
]
