"""A destination with no route fails at once, with the kernel's ENETUNREACH, on every loop.

A fresh network namespace holds one interface (one end of a veth pair whose
other end stays there too) with one address and no route beyond it. A
dispatcher bound to that address (on uvloop: the loop's own datagram
transport, which reports a refused send through ``error_received``) must
raise ``TransportError`` from the send itself. The peer runs as an ``ip
netns exec`` subprocess. Needs root and ``ip``; skips otherwise.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ADDRESS = "10.234.0.1"

PEER = """
import asyncio, errno, json, sys
import aiodisp
from aiodisp._transports.loop_datagram import LoopDatagramTransport
from tests.helpers.adapters import KeyAdapter

async def main() -> dict[str, object]:
    seen: dict[str, object] = {}
    # (coalesce=False: each send is its own datagram, and raises where it is made)
    async with await aiodisp.open_udp(KeyAdapter(), (sys.argv[1], 0), coalesce=False) as d:
        seen["loop_transport"] = isinstance(d.transport, LoopDatagramTransport)
        try:
            d.transport.send(b"x", ("192.0.2.1", 9))
            seen["send"] = "sent"
        except aiodisp.TransportError as exc:
            seen["send"] = errno.errorcode.get(exc.errno or 0, str(exc.errno))
        try:
            await d.notify_unreliable((1, b"x"), ("192.0.2.1", 9))
            seen["notify_unreliable"] = "sent"
        except aiodisp.TransportError as exc:
            seen["notify_unreliable"] = type(exc).__name__
        await asyncio.sleep(0.05)
        seen["transport_errors"] = d.stats.transport_errors
    # coalesce=True (the default): sends leave as the iteration ends, so a one-way
    # send's failure is counted (and logged) instead of raised
    async with await aiodisp.open_udp(KeyAdapter(), (sys.argv[1], 0)) as d:
        await d.notify_unreliable((3, b"x"), ("192.0.2.1", 9))
        await asyncio.sleep(0.05)
        seen["coalesced_transport_errors"] = d.stats.transport_errors
    return seen

if sys.argv[2] == "uvloop":
    import uvloop
    print(json.dumps(uvloop.run(main())))
else:
    print(json.dumps(asyncio.run(main())))
"""


@pytest.fixture
def namespace() -> Iterator[str]:
    if sys.platform != "linux" or os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("needs Linux, root and ip (network namespaces)")
    ns = f"aiodisp-unr{os.getpid()}"
    try:
        for cmd in (
            ("ip", "netns", "add", ns),
            ("ip", "-n", ns, "link", "add", "v0", "type", "veth", "peer", "name", "v1"),
            ("ip", "-n", ns, "addr", "add", f"{ADDRESS}/32", "dev", "v0"),
            ("ip", "-n", ns, "link", "set", "v0", "up"),
            ("ip", "-n", ns, "link", "set", "v1", "up"),
        ):
            subprocess.run(cmd, capture_output=True, text=True, check=True)
        yield ns
    finally:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_an_unroutable_destination_raises_enetunreach_at_once(namespace: str, loop: str) -> None:
    path = [os.environ.get("PYTHONPATH", ""), str(ROOT / "src"), str(ROOT)]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, path)))
    peer = subprocess.run(
        ["ip", "netns", "exec", namespace, sys.executable, "-c", textwrap.dedent(PEER),
         ADDRESS, loop],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=60, check=False,
    )
    assert peer.returncode == 0, peer.stderr
    seen = json.loads(peer.stdout)
    assert seen == {
        "loop_transport": loop == "uvloop",
        "send": "ENETUNREACH",
        "notify_unreliable": "TransportError",
        "transport_errors": 0,  # raised to the caller, not counted later as well
        "coalesced_transport_errors": 1,
    }
