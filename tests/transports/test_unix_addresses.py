"""Unix datagram addresses as the kernel sees them: unbound peers, paths, abstract names."""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import struct
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

import aiodisp
from aiodisp._transports.sockets import UNIX_MAX, SocketTransport, make_unix_socket
from tests.helpers.adapters import KeyAdapter
from tests.helpers.servers import echo_server

pytestmark = pytest.mark.both_loops

ACK_REQUESTED = 0x01 << 56


def frame(key: int, payload: bytes, packet_id: int = 1) -> bytes:
    """An ACK-framed datagram carrying KeyAdapter's (key, payload)."""
    return struct.pack(">Q", ACK_REQUESTED | packet_id) + struct.pack(">Q", key) + payload


def canonical(path: Path) -> str:
    """The absolute path with symlinks resolved: how the transport names a Unix peer."""
    return os.path.realpath(path)


@pytest.fixture
async def unix_server(tmp_path: Path) -> AsyncIterator[aiodisp.Dispatcher[Any]]:
    server = await aiodisp.open_unix(KeyAdapter(), tmp_path / "server.sock")
    task = asyncio.create_task(echo_server(server))
    yield server
    await server.close()
    await task


# --------------------------------------------------------------------------- unbound peers


async def test_a_send_to_an_unbound_peer_raises_transport_error_saying_so(tmp_path: Path) -> None:
    sock, path = make_unix_socket(tmp_path / "s.sock")
    t = SocketTransport(sock, reliable=True, max_datagram_size=UNIX_MAX, unlink_on_close=path)
    try:
        for addr in (None, "", b""):
            for send in (t.send, t.send_best_effort):
                with pytest.raises(aiodisp.TransportError, match="unbound") as info:
                    send(b"x", addr)
                assert info.value.errno == errno.EDESTADDRREQ
            with pytest.raises(aiodisp.TransportError, match="unbound"):
                await t.resolve(addr)
    finally:
        t.close()


async def test_a_datagram_from_an_unbound_socket_breaks_nothing(tmp_path: Path) -> None:
    server = await aiodisp.open_unix(KeyAdapter(), tmp_path / "server.sock")
    serving = asyncio.create_task(server.serve(lambda msg, addr: msg))
    try:
        unbound = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            # it asks for an ACK and gets an answer from the handler: neither can be sent
            unbound.sendto(frame(7, b"ack me"), server.local_addr)
        finally:
            unbound.close()
        async with await aiodisp.open_unix(KeyAdapter(), tmp_path / "client.sock") as client:
            assert await client.request((1, b"still serving"), server.local_addr, timeout=2) == (
                1, b"still serving")
        # the ACK to the unbound sender was refused with a TransportError, which the
        # dispatcher counts; the receiver read on
        assert server.stats.transport_errors >= 1
        assert server.stats.received == 2
    finally:
        await server.close()
        await serving


# --------------------------------------------------------------------------- paths


async def test_a_server_bound_by_a_relative_path_reports_its_absolute_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    expected = canonical(tmp_path / "rel.sock")
    async with await aiodisp.open_unix(KeyAdapter(), "rel.sock") as d:
        assert d.local_addr == expected


@pytest.mark.parametrize("form", ["relative", "dot", "double-slash", "dir-symlink", "symlink"])
async def test_any_name_of_the_servers_socket_gets_the_reply(
    form: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    unix_server: aiodisp.Dispatcher[Any],
) -> None:
    server_path = Path(unix_server.local_addr)
    if form == "relative":
        monkeypatch.chdir(server_path.parent)
        name: str = server_path.name
    elif form == "dot":
        monkeypatch.chdir(server_path.parent)
        name = "./" + server_path.name
    elif form == "double-slash":
        name = "/" + str(server_path)
    elif form == "dir-symlink":
        (tmp_path / "linkdir").symlink_to(server_path.parent, target_is_directory=True)
        name = str(tmp_path / "linkdir" / server_path.name)
    else:
        (tmp_path / "link.sock").symlink_to(server_path)
        name = str(tmp_path / "link.sock")
    async with await aiodisp.open_unix(KeyAdapter(), tmp_path / "client.sock") as client:
        assert await client.request((3, b"by name"), name, timeout=2) == (3, b"by name")
        assert client.stats.wrong_source == 0


async def test_a_peer_bound_by_a_relative_path_is_reported_as_the_kernel_reports_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    # (coalesce=False: the raw peer reads the ACK and the message as two datagrams)
    async with await aiodisp.open_unix(
        KeyAdapter(), tmp_path / "s.sock", coalesce=False
    ) as server:
        raw = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            raw.bind("peer.sock")  # the kernel reports this name as given: relative
            raw.sendto(frame(5, b"hi"), server.local_addr)
            received = await server.recv_from(timeout=2)
            # not resolved against this process's directory: that is not the sender's
            assert received.addr == "peer.sock"
            await server.notify_unreliable(received.msg, received.addr)  # it is answerable
            raw.settimeout(2)
            got = [raw.recv(100), raw.recv(100)]  # the ACK, then the message
            assert got[1][8:] == struct.pack(">Q", 5) + b"hi"
        finally:
            raw.close()
            os.unlink(tmp_path / "peer.sock")


async def test_a_peer_cannot_pass_for_another_by_swapping_its_directory_for_a_symlink(
    tmp_path: Path,
) -> None:
    """The kernel reports the name a socket was bound by; resolving that name again
    later would follow whatever the sender has since put in its path."""
    (tmp_path / "srv").mkdir()
    (tmp_path / "evil").mkdir()
    server_path = tmp_path / "srv" / "s.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)  # the genuine peer: silent
    server.bind(str(server_path))
    forger = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    forger.bind(str(tmp_path / "evil" / "s.sock"))
    (tmp_path / "evil").rename(tmp_path / "evil-moved")
    (tmp_path / "evil").symlink_to(tmp_path / "srv", target_is_directory=True)
    # .../evil/s.sock now resolves to the server's socket; the forger still reports it
    try:
        async with await aiodisp.open_unix(KeyAdapter(), tmp_path / "client.sock") as client:
            asking = asyncio.create_task(
                client.request((1, b"q"), str(server_path), timeout=0.5))
            await asyncio.sleep(0.05)
            forger.sendto(struct.pack(">Q", 0) + struct.pack(">Q", 1) + b"forged",
                          client.local_addr)
            with pytest.raises(aiodisp.RequestTimeout):
                await asking
            assert client.stats.replies_matched == 0
    finally:
        forger.close()
        server.close()


# --------------------------------------------------------------------------- abstract names


async def test_an_autobound_peer_has_one_address_type_received_and_resolved(
    unix_server: aiodisp.Dispatcher[Any],
) -> None:
    async with await aiodisp.open_unix(KeyAdapter(), "") as client:  # autobind: abstract
        addr = client.local_addr
        assert isinstance(addr, str) and addr.startswith("\0")
        assert await client.transport.resolve(addr) == addr
        assert await client.transport.resolve(os.fsencode(addr)) == addr
        assert await client.request((4, b"abstract"), unix_server.local_addr, timeout=2) == (
            4, b"abstract")

    async with await aiodisp.open_unix(KeyAdapter(), "") as peer:
        raw = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            raw.bind("")  # autobound; the kernel reports its name as bytes
            raw.sendto(frame(6, b"x"), peer.local_addr)
            received = await peer.recv_from(timeout=2)
            assert isinstance(received.addr, str)
            assert received.addr == os.fsdecode(raw.getsockname())
            assert await peer.transport.resolve(received.addr) == received.addr
        finally:
            raw.close()


async def test_a_server_on_an_abstract_name_answers() -> None:
    name = f"\0aiodisp-test-{os.getpid()}-{id(object())}"
    async with await aiodisp.open_unix(KeyAdapter(), name) as server, \
            await aiodisp.open_unix(KeyAdapter(), "") as client:
        assert server.local_addr == name
        task = asyncio.create_task(echo_server(server))
        assert await client.request((8, b"n"), name, timeout=2) == (8, b"n")
        assert await client.request((9, b"b"), os.fsencode(name), timeout=2) == (9, b"b")
    await task
