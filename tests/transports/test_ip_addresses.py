"""IP addresses compared as the kernel sees them; malformed ones get a TransportError;
name resolution can be cancelled."""

from __future__ import annotations

import asyncio
import errno
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest

import aiodisp
from aiodisp._transports.addresses import resolve_address
from aiodisp._transports.loop_datagram import LoopDatagramTransport, loop_reads_natively
from aiodisp._transports.sockets import SocketTransport, make_udp_socket
from tests.helpers.adapters import KeyAdapter
from tests.helpers.servers import echo_server

pytestmark = pytest.mark.both_loops

V4 = socket.AF_INET
V6 = socket.AF_INET6


def has_ipv6() -> bool:
    try:
        with socket.socket(V6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


needs_ipv6 = pytest.mark.skipif(not has_ipv6(), reason="this machine has no IPv6 loopback")


async def resolve(family: int, addr: Any) -> Any:
    return await resolve_address(asyncio.get_running_loop(), family, addr)


# --------------------------------------------------------------------------- one form


@pytest.mark.parametrize(
    ("family", "given", "canonical"),
    [
        (V4, ("127.0.0.1", 9), ("127.0.0.1", 9)),
        (V4, ("::ffff:127.0.0.1", 9), ("127.0.0.1", 9)),
        (V4, ("0.0.0.0", 9), ("127.0.0.1", 9)),
        (V4, ("127.0.0.1", "9"), ("127.0.0.1", 9)),
        (V4, ("::", 9), ("127.0.0.1", 9)),  # a dual-stack server's own address
        (V4, ("::", 9, 0, 0), ("127.0.0.1", 9)),
        (V6, ("127.0.0.1", 9), ("127.0.0.1", 9)),  # an IPv4 peer of a dual-stack socket
        (V6, ("::ffff:127.0.0.1", 9), ("127.0.0.1", 9)),
        (V6, ("::ffff:127.0.0.1", 9, 0, 0), ("127.0.0.1", 9)),
        (V6, ("0.0.0.0", 9), ("127.0.0.1", 9)),
        (V6, ("::", 9), ("::1", 9, 0, 0)),
        (V6, ("::", 9, 0, 0), ("::1", 9, 0, 0)),
        (V6, ("::1", 9), ("::1", 9, 0, 0)),
        (V6, ("::1", 9, 12345, 0), ("::1", 9, 0, 0)),  # the flow label is not the peer
        (V6, ("::1", 9, 0, 3), ("::1", 9, 0, 0)),  # nor a scope on a global address
        (V6, ("0:0::1", 9), ("::1", 9, 0, 0)),
        (V6, ("fe80::1", 9, 0, 3), ("fe80::1", 9, 0, 3)),  # link-local: the scope is
        (V6, ("fe80::1", 9, 7, 3), ("fe80::1", 9, 0, 3)),
        (V6, ("fe80::1%1", 9), ("fe80::1", 9, 0, 1)),
        (V6, ("ff02::1", 9, 0, 1), ("ff02::1", 9, 0, 1)),
    ],
)
async def test_resolve_gives_the_form_datagrams_arrive_from(
    family: int, given: Any, canonical: Any
) -> None:
    assert await resolve(family, given) == canonical


@needs_ipv6
@pytest.mark.parametrize("form", [(0, 0), (4242, 0), (0, 5)])
async def test_an_ipv6_destination_with_flowinfo_or_scope_matches_its_replies(
    form: tuple[int, int],
) -> None:
    adapter = KeyAdapter()
    async with await aiodisp.open_udp(adapter, ("::1", 0)) as server, \
            await aiodisp.open_udp(adapter, ("::1", 0)) as client:
        task = asyncio.create_task(echo_server(server))
        dest = (*server.local_addr[:2], *form)
        assert await client.request((1, b"v6"), dest, timeout=2) == (1, b"v6")
        assert client.stats.wrong_source == 0
    await task


@needs_ipv6
async def test_an_ipv4_mapped_destination_matches_replies_from_the_ipv4_peer() -> None:
    adapter = KeyAdapter()
    async with await aiodisp.open_udp(adapter, ("127.0.0.1", 0)) as server, \
            await aiodisp.open_udp(adapter, ("::", 0)) as client:
        task = asyncio.create_task(echo_server(server))
        dest = ("::ffff:127.0.0.1", server.local_addr[1], 0, 0)
        assert await client.request((1, b"mapped"), dest, timeout=2) == (1, b"mapped")
        assert client.stats.wrong_source == 0
    await task


# --------------------------------------------------------------------------- malformed

MALFORMED = [
    ("127.0.0.1", 70000),
    ("127.0.0.1", 65536),
    ("127.0.0.1", -1),
    ("127.0.0.1", True),
    ("127.0.0.1", 9.0),
    ("127.0.0.1", None),
    ("127.0.0.1", [9]),  # unhashable
    (["127.0.0.1"], 9),
    (b"127.0.0.1", 9),
    (None, 9),
    ("127.0.0.1",),
    ("127.0.0.1", 9, 0),
    "127.0.0.1:9",
    ["127.0.0.1", 9],
    {"host": "127.0.0.1"},
    9,
    None,
]
MALFORMED_V6 = [
    ("::1", 9, -1, 0),
    ("::1", 9, 0, 2**32),
    ("::1", 9, "0", 0),
    ("::1", 9, 0, None),
]


@pytest.mark.parametrize("family", [V4, V6])
@pytest.mark.parametrize("addr", MALFORMED + MALFORMED_V6)
async def test_a_malformed_address_gets_a_transport_error(family: int, addr: Any) -> None:
    with pytest.raises(aiodisp.TransportError) as info:
        await resolve(family, addr)
    assert info.value.errno == errno.EINVAL


@pytest.fixture(params=["socket", "loop"])
async def udp_transport(request: Any) -> AsyncIterator[Any]:
    sock, limit = make_udp_socket(("127.0.0.1", 0))
    t: Any
    if request.param == "loop":
        if not loop_reads_natively(asyncio.get_running_loop()):
            sock.close()
            pytest.skip("the selector loop's datagram transport is not used (SocketTransport is)")
        t = await LoopDatagramTransport.open(sock, max_datagram_size=limit)
    else:
        t = SocketTransport(sock, reliable=False, max_datagram_size=limit)
    yield t
    t.close()


#: What no sendto() can take. (send() takes what resolve() returns: some addresses that
#: resolve() refuses, a port of True or a host as bytes, a sendto() takes as they are, and
#: uvloop's sendto() wraps a port past 65535 as getaddrinfo() does.)
UNSENDABLE = [
    ("127.0.0.1", None),
    ("127.0.0.1", [9]),
    (["127.0.0.1"], 9),
    (None, 9),
    ("127.0.0.1",),
    ("127.0.0.1", 9, 0),
    "127.0.0.1:9",
    ["127.0.0.1", 9],
    {"host": "127.0.0.1"},
    9,
    None,
]


@pytest.mark.parametrize("addr", UNSENDABLE)
async def test_an_unsendable_address_given_to_send_gets_a_transport_error(
    udp_transport: Any, addr: Any
) -> None:
    for send in (udp_transport.send, udp_transport.send_best_effort):
        with pytest.raises(aiodisp.TransportError):
            send(b"x", addr)


async def test_a_port_out_of_range_given_to_send_gets_a_transport_error() -> None:
    sock, limit = make_udp_socket(("127.0.0.1", 0))
    t = SocketTransport(sock, reliable=False, max_datagram_size=limit)
    try:
        for port in (70000, -1):
            with pytest.raises(aiodisp.TransportError):
                t.send(b"x", ("127.0.0.1", port))
    finally:
        t.close()


async def test_a_request_to_a_malformed_address_fails_before_sending() -> None:
    async with await aiodisp.open_udp(KeyAdapter(), ("127.0.0.1", 0)) as client:
        for addr in (("127.0.0.1", 70000), ("127.0.0.1", [9]), ["127.0.0.1", 9]):
            with pytest.raises(aiodisp.TransportError):
                await client.request((1, b""), addr, timeout=0.5)
        assert client.stats.sent == 0


@pytest.mark.parametrize("local_addr", [("127.0.0.1", 70000), ("127.0.0.1", -1), ("::1", "x")])
async def test_binding_to_a_malformed_address_gets_a_transport_error(local_addr: Any) -> None:
    with pytest.raises(aiodisp.TransportError, match="cannot bind"):
        await aiodisp.open_udp(KeyAdapter(), local_addr)


# --------------------------------------------------------------------------- resolution


async def test_a_slow_name_lookup_is_cancellable(monkeypatch: pytest.MonkeyPatch) -> None:
    loop = asyncio.get_running_loop()
    started = asyncio.Event()

    async def slow_getaddrinfo(*args: Any, **kwargs: Any) -> Any:
        started.set()
        await asyncio.sleep(3600)

    monkeypatch.setattr(loop, "getaddrinfo", slow_getaddrinfo)
    sock, limit = make_udp_socket(("127.0.0.1", 0))
    t = SocketTransport(sock, reliable=False, max_datagram_size=limit)
    try:
        resolving = asyncio.create_task(t.resolve(("slow.example", 53)))
        await started.wait()
        resolving.cancel()
        with pytest.raises(asyncio.CancelledError):
            await resolving
        async with asyncio.timeout(0.5):  # a timeout around it ends it too
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.05):
                    await t.resolve(("slow.example", 53))
    finally:
        t.close()

