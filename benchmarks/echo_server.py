"""The common echo server: one fast answer for every client under comparison.

Client-side comparisons measure the clients, so they all talk to this one server,
which is cheaper per datagram than any of them: a raw non-blocking socket read
through ``loop.add_reader``, draining every queued datagram per wake-up (run it
on uvloop). Each mode has its own socket and writes a correct reply:

* ``raw``: IdPrefixAdapter bytes (hand-rolled matchers, aiodisp raw framing):
  set the reply flag, bit 63 of the first word;
* ``ack``: aiodisp ACK framing: keep the 8-byte framing header (flags 0, the
  packet id: unique per client, so the client's duplicate filter is content)
  and set the reply flag of the adapter's word behind it; a bundle of requests
  (``coalesce=True``) is answered with one bundle of their replies;
* ``rpc``: rpcudp: ``0x01``, the request's 20-byte id, ``msgpack(argument)``
  with the reply flag set;
* ``coap``: CoAP: a piggybacked ACK (to CON) or a NON response (to NON), code
  2.05, the request's token, the payload with the reply flag set.

``held_raw`` / ``held_ack`` (memory benchmark) answer like ``raw`` / ``ack`` but
hold every reply back until ``expect`` requests have come, then wait ``hold``
seconds and send them all, paced at 20,000 replies a second (a burst would
overflow the client's socket buffer), so that ``expect`` requests are pending
at once; from then on a request is answered at once (a retransmission of one
whose reply the client's socket dropped after all).
"""

from __future__ import annotations

import asyncio
import itertools
import socket
from collections.abc import Callable
from typing import Any

try:
    import msgpack
except ImportError:  # pragma: no cover - rpcudp brings umsgpack
    import umsgpack as msgpack  # type: ignore[no-redef]

from common import REPLY_BIT, WORD

from aiodisp._core.bundling import FLAG_BUNDLE, pack_bundle, split_bundle

MODES = ("raw", "ack", "rpc", "coap")
_pack = WORD.pack
_unpack = WORD.unpack_from
_BUNDLE = bytes([FLAG_BUNDLE])


def reply_raw(data: bytes) -> bytes | None:
    (word,) = _unpack(data)
    return _pack(word | REPLY_BIT) + data[8:]


def reply_ack(data: bytes) -> bytes | None:
    if len(data) < 16 or data[0] != 0:  # only first sends of requests (flags 0) ...
        if data[:1] == _BUNDLE:
            return reply_bundle(data)
        return None
    (word,) = _unpack(data, 8)
    return data[:8] + _pack(word | REPLY_BIT) + data[16:]


def reply_bundle(data: bytes) -> bytes | None:
    """... or a bundle of them (``coalesce=True``): one bundle of their replies."""
    records = split_bundle(data)
    if isinstance(records, str):
        return None
    replies = [r for r in map(reply_ack, records) if r is not None]
    return pack_bundle(replies) if replies else None


def reply_rpc(data: bytes) -> bytes | None:
    if len(data) < 22 or data[0] != 0:
        return None
    _name, args = msgpack.unpackb(data[21:])
    return b"\x01" + data[1:21] + msgpack.packb(reply_raw(args[0]))


_coap_mids = itertools.count(1)


def coap_payload(data: bytes, tkl: int) -> bytes:
    """The payload of a CoAP message whose options start after the token."""
    pos = 4 + tkl
    end = len(data)
    while pos < end:
        byte = data[pos]
        if byte == 0xFF:
            return data[pos + 1 :]
        pos += 1
        for nibble in (byte >> 4, byte & 0x0F):  # delta, then length
            if nibble == 13:
                ext = data[pos] + 13
                pos += 1
            elif nibble == 14:
                ext = (data[pos] << 8 | data[pos + 1]) + 269
                pos += 2
            else:
                ext = nibble
        pos += ext  # the last ext read is the option's length
    return b""


def reply_coap(data: bytes) -> bytes | None:
    if len(data) < 4 or data[0] >> 6 != 1 or data[1] == 0:
        return None
    mtype = (data[0] >> 4) & 3
    tkl = data[0] & 0x0F
    token = data[4 : 4 + tkl]
    payload = coap_payload(data, tkl)
    if len(payload) < 8:
        return None
    if mtype == 0:  # CON: piggybacked response in the ACK
        head = bytes((0x60 | tkl, 0x45)) + data[2:4]
    elif mtype == 1:  # NON: a NON response with a fresh message id
        mid = next(_coap_mids) & 0xFFFF
        head = bytes((0x50 | tkl, 0x45, mid >> 8, mid & 0xFF))
    else:
        return None
    body = reply_raw(payload)
    assert body is not None
    return head + token + b"\xff" + body


REPLIES: dict[str, Callable[[bytes], bytes | None]] = {
    "raw": reply_raw,
    "ack": reply_ack,
    "rpc": reply_rpc,
    "coap": reply_coap,
}


async def serve_common(
    modes: tuple[str, ...],
    ready: Callable[[dict[str, Any]], None],
    stop: asyncio.Future[None],
    host: str = "127.0.0.1",
    *,
    hold: float = 1.0,
    expect: int = 0,
) -> None:
    """One socket per mode on ``host``; ``ready({mode: addr})`` once bound."""
    loop = asyncio.get_running_loop()
    socks: list[socket.socket] = []
    addrs: dict[str, Any] = {}
    try:
        for mode in modes:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            socks.append(sock)
            sock.setblocking(False)
            big_buffers(sock)
            sock.bind((host, 0))
            addrs[mode] = sock.getsockname()
            if mode.startswith("held_"):
                drain = _holder(sock, REPLIES[mode[5:]], hold, expect)
            else:
                drain = _drainer(sock, REPLIES[mode])
            loop.add_reader(sock.fileno(), drain)
        ready(addrs)
        await stop
    finally:
        for sock in socks:
            loop.remove_reader(sock.fileno())
            sock.close()


def _drainer(sock: socket.socket, answer: Callable[[bytes], bytes | None]) -> Callable[[], None]:
    recvfrom = sock.recvfrom
    sendto = sock.sendto

    def drain() -> None:
        while True:
            try:
                data, peer = recvfrom(4096)
            except (BlockingIOError, InterruptedError):
                return
            try:
                reply = answer(data)
            except Exception:  # a malformed datagram gets no reply
                continue
            if reply is not None:
                try:
                    sendto(reply, peer)
                except BlockingIOError:
                    pass  # the client's timeout covers it

    return drain


def big_buffers(sock: socket.socket, size: int = 128 << 20) -> None:
    """Socket buffers of ``size`` (past rmem_max as root), so bursts are not dropped."""
    for force, plain in ((getattr(socket, "SO_RCVBUFFORCE", None), socket.SO_RCVBUF),
                         (getattr(socket, "SO_SNDBUFFORCE", None), socket.SO_SNDBUF)):
        try:
            sock.setsockopt(socket.SOL_SOCKET, force if force is not None else plain, size)
        except OSError:
            sock.setsockopt(socket.SOL_SOCKET, plain, size)


def _holder(
    sock: socket.socket, answer: Callable[[bytes], bytes | None], hold: float, expect: int
) -> Callable[[], None]:
    loop = asyncio.get_running_loop()
    held: list[tuple[bytes, Any, int]] = []  # (reply, peer, the replies it holds)
    tasks: set[asyncio.Task[None]] = set()
    seen: set[tuple[Any, bytes]] = set()  # the requests held (peer, record)
    released = [False]

    async def release() -> None:
        await asyncio.sleep(hold)
        released[0] = True
        batch, held[:] = list(held), []
        seen.clear()
        sent = 0  # replies, not datagrams: 200 each 10 ms (a bundle holds several)
        for reply, peer, replies in batch:
            try:
                sock.sendto(reply, peer)
            except OSError:
                if sock.fileno() < 0:
                    return  # the server stopped: the socket is closed
                continue  # (a full buffer: the client's retransmission covers it)
            sent += replies
            if sent >= 200:
                sent = 0
                await asyncio.sleep(0.01)

    def drain() -> None:
        while True:
            try:
                data, peer = sock.recvfrom(4096)
            except (BlockingIOError, InterruptedError):
                return
            reply = answer(data)
            if reply is None:
                continue
            if released[0]:
                # Once the held replies go out, a request is answered at once, as a
                # server answers a retransmission: a reply the client's full socket
                # dropped is recovered by its retransmission, not left to time out.
                try:
                    sock.sendto(reply, peer)
                except OSError:
                    pass
                continue
            replies = split_bundle(reply) if reply[:1] == _BUNDLE else None
            held.append((reply, peer, len(replies) if isinstance(replies, list) else 1))
            # Count requests, not datagrams (a bundle holds several) and not copies
            # (a request retransmitted while the others are still being sent is held
            # again, but does not make one more pending request).
            records = split_bundle(data) if data[:1] == _BUNDLE else None
            if isinstance(records, list):
                seen.update((peer, bytes(r)) for r in records)
            else:
                seen.add((peer, data))
            if len(seen) >= expect and not tasks:
                task = loop.create_task(release())
                tasks.add(task)
                task.add_done_callback(tasks.discard)

    return drain
