"""examples/coap.py's client against libcoap's server (coap-server-notls, libcoap 4.3).

libcoap's example server answers ``/`` and ``/time`` piggybacked, lets PUT
change ``/example_data``, answers ``/async?N`` with an empty ACK and a separate
response N seconds later, and resets a CON whose code it cannot read (class
1). Its debug log (``-v 7``) says when it takes a CON of its own off its
retransmission queue ("mid=0x...: removed"), which shows that it got our ACK.
"""

from __future__ import annotations

import asyncio
import time

import pytest

import aiodisp
from tests.interop.peers import Daemon, load_example

coap = load_example("coap")

#: Quick retransmission for loopback (RFC 7252's 2 s would make every loss a long wait).
FIRST_WAIT = 0.3
FAST = aiodisp.RetryPolicy(initial_timeout=FIRST_WAIT, backoff=2.0, max_attempts=6,
                          jitter=0.0)



async def test_get_confirmable_is_answered_piggybacked(libcoap_server: Daemon) -> None:
    async with await coap.CoapClient.open(("127.0.0.1", 0), retry=FAST) as c:
        request = c.message(coap.GET, "")
        response = await c.request(request, libcoap_server.addr)
        stats = c.dispatcher.stats
    assert response.mtype == coap.ACK and response.mid == request.mid  # the ACK is the response
    assert response.code == coap.CONTENT and b"libcoap" in response.payload
    assert stats.replies_matched == 1 and stats.retransmissions == 0


async def test_get_non_confirmable_is_answered_non_confirmable(libcoap_server: Daemon) -> None:
    async with await coap.CoapClient.open(("127.0.0.1", 0), retry=FAST) as c:
        response = await c.get(libcoap_server.addr, "", confirmable=False)
    assert response.mtype == coap.NON and b"libcoap" in response.payload


async def test_put_then_get_reads_back_what_was_put(libcoap_server: Daemon) -> None:
    async with await coap.CoapClient.open(("127.0.0.1", 0), retry=FAST) as c:
        changed = await c.put(libcoap_server.addr, "example_data", b"put by aiodisp")
        got = await c.get(libcoap_server.addr, "example_data")
    assert changed.code in (coap.CREATED, coap.CHANGED)
    assert got.payload == b"put by aiodisp"


async def test_an_unknown_path_is_a_coap_error_not_a_dispatch_error(
    libcoap_server: Daemon,
) -> None:
    async with await coap.CoapClient.open(("127.0.0.1", 0), retry=FAST) as c:
        with pytest.raises(coap.CoapError, match=r"4\.04"):
            await c.get(libcoap_server.addr, "no/such/thing")


async def test_rst_fails_the_request_at_once_with_peer_rejected(libcoap_server: Daemon) -> None:
    async with await coap.CoapClient.open(("127.0.0.1", 0), retry=FAST, timeout=30.0) as c:
        # a CON with a class-1 code: libcoap cannot process it and resets it
        request = coap.CoapMessage(coap.CON, coap.code(1, 1), 4242, b"\x42\x42")
        start = time.monotonic()
        with pytest.raises(aiodisp.PeerRejected) as caught:
            await c.dispatcher.request(request, libcoap_server.addr, timeout=30.0, retry=FAST)
        took = time.monotonic() - start
        stats = c.dispatcher.stats
    assert took < FIRST_WAIT * 3 + 2.0  # not the 30 s timeout: at its RST
    rst = caught.value.msg
    assert rst.mtype == coap.RST and rst.mid == 4242
    assert caught.value.key == b"\x42\x42"
    assert stats.rejected == 1 and stats.timeouts == 0 and c.dispatcher.pending == 0


async def test_empty_ack_stops_retransmission_and_the_separate_response_is_acked(
    libcoap_server: Daemon,
) -> None:
    """``/async?1``: libcoap ACKs the CON at once and sends the response a second later."""
    # the first retransmission would be due at 0.5 s: half a second for libcoap's ACK
    patient = aiodisp.RetryPolicy(initial_timeout=0.5, backoff=2.0, max_attempts=6, jitter=0.0)
    async with await coap.CoapClient.open(("127.0.0.1", 0), retry=patient) as c:
        request = c.message(coap.GET, "async", options=[(coap.URI_QUERY, b"1")])
        start = time.monotonic()
        response = await c.request(request, libcoap_server.addr)
        took = time.monotonic() - start
        stats = c.dispatcher.stats
    # without the empty ACK, the policy would have resent at 0.5 s of that second
    assert took >= 0.9
    assert stats.acks_received == 1 and stats.retransmissions == 0
    # the response came as a CON of its own, which aiodisp ACKed...
    assert response.mtype == coap.CON and response.mid != request.mid
    assert response.token == request.token and response.code == coap.CONTENT
    assert stats.acks_sent == 1
    # ...so libcoap took it off its retransmission queue (and will not resend it)
    assert libcoap_server.wait_for_output(f"mid=0x{response.mid:04x}: removed")


async def test_pings_are_answered_with_rst(libcoap_server: Daemon) -> None:
    """libcoap 4.3.1 answers only some pings of a session; the retransmissions get there."""
    async with await coap.CoapClient.open(("127.0.0.1", 0), retry=FAST, timeout=10.0) as c:
        for _ in range(3):
            assert 0 < await c.ping(libcoap_server.addr) < 10.0
        assert c.dispatcher.stats.rejected == 3  # each pong is an RST


async def test_fifty_gets_in_flight_on_one_socket(libcoap_server: Daemon) -> None:
    async with await coap.CoapClient.open(("127.0.0.1", 0), retry=FAST) as c:
        responses = await asyncio.gather(
            *(c.get(libcoap_server.addr, "time") for _ in range(50))
        )
        stats = c.dispatcher.stats
    assert len({r.token for r in responses}) == 50
    assert all(r.code == coap.CONTENT for r in responses)
    assert stats.replies_matched == 50 and c.dispatcher.pending == 0


def test_the_client_script_gets_puts_and_pings(libcoap_server: Daemon) -> None:
    import subprocess
    import sys

    from tests.interop.peers import ROOT

    base = f"coap://{libcoap_server.addr[0]}:{libcoap_server.addr[1]}"
    script = str(ROOT / "examples" / "coap.py")

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, script, *args], capture_output=True, text=True,
                              timeout=60)

    put = run("put", f"{base}/example_data", "from the script")
    assert put.returncode == 0 and put.stdout.startswith("2.0"), put.stderr
    got = run("get", "--non", f"{base}/example_data")
    assert got.stdout.strip() == "2.05 from the script", got.stderr
    missing = run("get", f"{base}/nothing/here")
    assert missing.returncode == 1 and "4.04" in missing.stderr
    assert "Traceback" not in missing.stderr
    pong = run("ping", "--timeout", "20", base)
    assert pong.returncode == 0 and pong.stdout.startswith("pong from"), pong.stderr
