"""The peers the harness compares; each module has a client side and a server side.

A peer module defines:

* ``VARIANTS``: the ways it can run (aiodisp: ``ack``/``raw`` framing, aiocoap:
  ``con``/``non`` messages, the others one each);
* ``ECHO_MODE``: for each variant, the mode of the common echo server
  (:mod:`echo_server`) that answers it correctly;
* ``async def open_client(variant, target, timeout) -> (call, close)``: ``call(i, data)``
  sends the 72-byte message and returns the reply as 72 bytes;
* ``async def serve(variant, addr, ready, stop)``: the peer's own echo server, for
  end-to-end runs; it calls ``ready(local_addr)`` once bound and returns when ``stop``
  is done.
"""

from __future__ import annotations

import importlib
from types import ModuleType

PEERS = ("handrolled", "handrolled_reader", "aiodisp", "rpcudp", "aiocoap")
_MODULES = {
    "handrolled": "peers.handrolled",
    "handrolled_reader": "peers.handrolled_reader",
    "aiodisp": "peers.aiodisp_peer",
    "rpcudp": "peers.rpcudp_peer",
    "aiocoap": "peers.aiocoap_peer",
}


def load(name: str) -> ModuleType:
    """The module of peer ``name`` (imported on first use: aiocoap is slow to import)."""
    return importlib.import_module(_MODULES[name])
