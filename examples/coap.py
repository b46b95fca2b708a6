"""CoAP (RFC 7252) on aiodisp: a client and a server over raw UDP framing.

CoAP has two layers, and aiodisp's optional adapter methods express both:

* the **request/response layer** pairs a response with its request by the
  *token*: that is ``msg_key``;
* the **message layer** makes single datagrams reliable by the 16-bit
  *Message ID*: a confirmable (CON) message is retransmitted until the peer
  answers with an ACK (empty, or carrying the response: "piggybacked") or a
  Reset (RST) with the same Message ID. That is ``transaction_key`` (the
  Message ID), ``classify`` (what a datagram is: a request for the
  application, a response, an empty ACK, a RST, a ping) and ``ack_for`` (the
  empty ACK or RST to send back the moment a datagram is taken).

With them aiodisp does the message layer itself: a CON request is
retransmitted until its empty ACK or its response arrives; an RST fails it at
once with :class:`aiodisp.PeerRejected`; a separate response (a CON of its own)
is ACKed, late copies too, so the server stops resending it; a server drops
retransmitted CONs by (sender, Message ID) and answers them with the very
bytes of its first response; a ping (an empty CON) is answered with an RST
without bothering the application; ``notify()`` sends a CON and returns once
the peer ACKs it.

As a library::

    async with await CoapClient.open() as client:
        response = await client.get(("127.0.0.1", 5683), "time")
        await client.put(("127.0.0.1", 5683), "store", b"42")
        rtt = await client.ping(("127.0.0.1", 5683))

    server = await CoapServer.open(("127.0.0.1", 5683))
    server.resources["hello"] = b"world"
    await server.serve()          # until server.close()

As a script::

    python examples/coap.py serve --port 5683
    python examples/coap.py get coap://127.0.0.1:5683/hello
    python examples/coap.py put coap://127.0.0.1:5683/store 42
    python examples/coap.py get --non coap://127.0.0.1:5683/hello
    python examples/coap.py ping coap://127.0.0.1:5683

Not covered: block-wise transfers, proxying, multicast, DTLS, Observe on the
client side (the server does Observe: see :meth:`CoapServer.push`).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import secrets
import sys
import time
from collections.abc import Callable, Hashable, Iterable, Sequence
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

import aiodisp

# ---------------------------------------------------------------------- the wire format

CON, NON, ACK, RST = 0, 1, 2, 3
TYPE_NAMES = ("CON", "NON", "ACK", "RST")

EMPTY = 0x00
GET, POST, PUT, DELETE = 0x01, 0x02, 0x03, 0x04


def code(cls: int, detail: int) -> int:
    """The code byte ``c.dd``: ``code(2, 5)`` is 2.05 Content."""
    return (cls << 5) | detail


CREATED, DELETED, VALID, CHANGED, CONTENT = (code(2, d) for d in (1, 2, 3, 4, 5))
BAD_REQUEST, NOT_FOUND, METHOD_NOT_ALLOWED = code(4, 0), code(4, 4), code(4, 5)

OBSERVE = 6
URI_PATH = 11
CONTENT_FORMAT = 12
URI_QUERY = 15

#: RFC 7252's transmission parameters, scaled by the policy's caller where needed.
ACK_TIMEOUT = 2.0
MAX_RETRANSMIT = 4
#: A CON is sent up to 1 + MAX_RETRANSMIT times, waiting 2, 4, 8, 16 s (jitter ~ RANDOM_FACTOR).
CON_RETRY = aiodisp.RetryPolicy(
    initial_timeout=ACK_TIMEOUT * 1.25, backoff=2.0, max_attempts=1 + MAX_RETRANSMIT,
    jitter=0.2, max_interval=60.0,
)
#: EXCHANGE_LIFETIME is ~247 s; a request's whole call is bounded much lower by default.
DEFAULT_TIMEOUT = 45.0


def code_text(value: int) -> str:
    return f"{value >> 5}.{value & 0x1F:02d}"


@dataclasses.dataclass(frozen=True, slots=True)
class CoapMessage:
    """One CoAP message: type, code, Message ID, token, options (number, value), payload."""

    mtype: int
    code: int
    mid: int
    token: bytes = b""
    options: tuple[tuple[int, bytes], ...] = ()
    payload: bytes = b""

    @property
    def is_empty(self) -> bool:
        return self.code == EMPTY

    @property
    def is_request(self) -> bool:
        return 0 < self.code < 0x20

    @property
    def is_response(self) -> bool:
        return 0x40 <= self.code < 0xC0

    def option_values(self, number: int) -> list[bytes]:
        return [value for num, value in self.options if num == number]

    @property
    def path(self) -> str:
        return "/".join(v.decode("utf-8", "replace") for v in self.option_values(URI_PATH))

    @property
    def observe(self) -> int | None:
        values = self.option_values(OBSERVE)
        return int.from_bytes(values[0], "big") if values else None

    def __repr__(self) -> str:
        extra = f" {len(self.payload)}B" if self.payload else ""
        return (f"<CoAP {TYPE_NAMES[self.mtype]} {code_text(self.code)} mid={self.mid} "
                f"token={self.token.hex() or '-'}{extra}>")


def uint_option(number: int, value: int) -> tuple[int, bytes]:
    """An option holding an unsigned integer in as few bytes as it needs (0 is empty)."""
    return number, value.to_bytes((value.bit_length() + 7) // 8, "big")


def path_options(path: str) -> tuple[tuple[int, bytes], ...]:
    return tuple((URI_PATH, part.encode()) for part in path.strip("/").split("/") if part)


def _ext(value: int) -> tuple[int, bytes]:
    if value < 13:
        return value, b""
    if value < 269:
        return 13, bytes((value - 13,))
    return 14, (value - 269).to_bytes(2, "big")


def encode(msg: CoapMessage) -> bytes:
    """The datagram of ``msg`` (options sorted by number, as the delta encoding needs)."""
    if len(msg.token) > 8:
        raise ValueError("a CoAP token is at most 8 bytes")
    out = bytearray((0x40 | (msg.mtype << 4) | len(msg.token), msg.code))
    out += msg.mid.to_bytes(2, "big")
    out += msg.token
    last = 0
    for number, value in sorted(msg.options, key=lambda opt: opt[0]):
        delta, delta_ext = _ext(number - last)
        length, length_ext = _ext(len(value))
        out.append((delta << 4) | length)
        out += delta_ext + length_ext + value
        last = number
    if msg.payload:
        out.append(0xFF)
        out += msg.payload
    return bytes(out)


def _read_ext(nibble: int, data: bytes, i: int) -> tuple[int, int]:
    if nibble < 13:
        return nibble, i
    if nibble == 13:
        if i >= len(data):
            raise ValueError("truncated option")
        return data[i] + 13, i + 1
    if nibble == 14:
        if i + 2 > len(data):
            raise ValueError("truncated option")
        return int.from_bytes(data[i:i + 2], "big") + 269, i + 2
    raise ValueError("reserved option nibble 15")


def decode(data: bytes) -> CoapMessage:
    """The message in ``data``; ValueError if it is not CoAP version 1."""
    if len(data) < 4:
        raise ValueError(f"a {len(data)}-byte datagram is not CoAP")
    first = data[0]
    if first >> 6 != 1:
        raise ValueError(f"CoAP version {first >> 6}")
    mtype, tkl = (first >> 4) & 3, first & 0x0F
    if tkl > 8:
        raise ValueError(f"token length {tkl}")
    msg_code = data[1]
    mid = int.from_bytes(data[2:4], "big")
    i = 4 + tkl
    if i > len(data):
        raise ValueError("truncated token")
    token = bytes(data[4:i])
    options: list[tuple[int, bytes]] = []
    number = 0
    payload = b""
    while i < len(data):
        byte = data[i]
        i += 1
        if byte == 0xFF:
            payload = bytes(data[i:])
            if not payload:
                raise ValueError("payload marker without a payload")
            break
        delta, i = _read_ext(byte >> 4, data, i)
        length, i = _read_ext(byte & 0x0F, data, i)
        if i + length > len(data):
            raise ValueError("truncated option value")
        number += delta
        options.append((number, bytes(data[i:i + length])))
        i += length
    if msg_code == EMPTY and (tkl or options or payload):
        raise ValueError("an empty message with a token, options or payload")
    return CoapMessage(mtype, msg_code, mid, token, tuple(options), payload)


# ---------------------------------------------------------------------- the adapter


class CoapAdapter:
    """CoAP for aiodisp: both layers (see the module docstring).

    ``separate(request) -> bool`` says which incoming CON requests get an empty
    ACK at once, their response following later as a CON of its own (a
    "separate response"); the others are answered by a piggybacked response,
    which the application sends as the ACK. By default every request is
    answered piggybacked.
    """

    def __init__(self, separate: Callable[[CoapMessage], bool] | None = None) -> None:
        self.separate = separate

    def msg_to_raw(self, msg: CoapMessage) -> bytes:
        return encode(msg)

    def raw_to_msg(self, raw: bytes) -> CoapMessage:
        return decode(raw)  # ValueError on garbage: aiodisp drops and counts it

    def msg_key(self, msg: CoapMessage) -> Hashable:
        # The request/response layer: the token. A message that carries no token
        # of its own (a ping, an empty ACK, a RST) is keyed by its Message ID.
        if msg.is_empty:
            return ("mid", msg.mid)
        return msg.token

    def transaction_key(self, msg: CoapMessage) -> int:
        return msg.mid

    def classify(self, msg: CoapMessage) -> aiodisp.Kind:
        if msg.mtype == RST:
            return aiodisp.Kind.REJECT
        if msg.is_empty:
            # an empty ACK confirms our CON; an empty CON is a ping (answered by
            # ack_for's RST); an empty NON means nothing
            return aiodisp.Kind.ACK if msg.mtype == ACK else aiodisp.Kind.DROP
        if msg.is_response:
            return aiodisp.Kind.REPLY  # piggybacked (ACK) or separate (CON, NON)
        if msg.is_request and msg.mtype != ACK:
            return aiodisp.Kind.MESSAGE
        return aiodisp.Kind.DROP  # a request in an ACK, a reserved code class

    def ack_for(self, msg: CoapMessage) -> CoapMessage | None:
        if msg.mtype != CON:
            return None
        if msg.is_empty:
            return CoapMessage(RST, EMPTY, msg.mid)  # the answer to a ping
        if msg.is_request:
            if self.separate is not None and self.separate(msg):
                return CoapMessage(ACK, EMPTY, msg.mid)
            return None  # the application's response is the ACK (piggybacked)
        if msg.is_response:
            return CoapMessage(ACK, EMPTY, msg.mid)  # a separate response: ACK it
        return CoapMessage(RST, EMPTY, msg.mid)  # a CON we cannot process


class MessageIds:
    """Message IDs for our own messages: sequential from a random start, 16 bits."""

    def __init__(self) -> None:
        self._next = secrets.randbits(16)

    def __next__(self) -> int:
        mid = self._next
        self._next = (mid + 1) & 0xFFFF
        return mid


# ---------------------------------------------------------------------- the client


class CoapError(Exception):
    """The server answered with an error code (4.xx, 5.xx)."""

    def __init__(self, response: CoapMessage) -> None:
        self.response = response
        detail = response.payload.decode("utf-8", "replace")
        super().__init__(f"{code_text(response.code)}" + (f" {detail}" if detail else ""))


class CoapClient:
    """A CoAP client on one UDP socket; any number of requests in flight at once.

    ``retry`` is the retransmission policy of CON requests (default: RFC 7252's
    ACK_TIMEOUT and MAX_RETRANSMIT); ``timeout`` bounds each call.
    """

    def __init__(
        self,
        dispatcher: aiodisp.Dispatcher[CoapMessage],
        *,
        retry: aiodisp.RetryPolicy = CON_RETRY,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        self.dispatcher = dispatcher
        self.retry = retry
        self.timeout = timeout
        self._mids = MessageIds()

    @classmethod
    async def open(
        cls,
        local_addr: tuple[str, int] = ("0.0.0.0", 0),
        *,
        retry: aiodisp.RetryPolicy = CON_RETRY,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> CoapClient:
        d = await aiodisp.open_udp(CoapAdapter(), local_addr, framing="raw")
        return cls(d, retry=retry, timeout=timeout)

    async def close(self) -> None:
        await self.dispatcher.close()

    async def __aenter__(self) -> CoapClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def message(
        self,
        method: int,
        path: str,
        payload: bytes = b"",
        *,
        confirmable: bool = True,
        options: Iterable[tuple[int, bytes]] = (),
    ) -> CoapMessage:
        """A request with a fresh Message ID and a fresh random 4-byte token."""
        return CoapMessage(
            CON if confirmable else NON, method, next(self._mids), secrets.token_bytes(4),
            (*path_options(path), *options), payload,
        )

    async def request(self, msg: CoapMessage, addr: Any) -> CoapMessage:
        """Send a request; return its response (piggybacked or separate), whatever its code.

        A CON is retransmitted by ``retry`` until the server's empty ACK or its
        response arrives; an RST raises :class:`aiodisp.PeerRejected`. A NON is
        sent once; its response may come as a NON or a CON.
        """
        while True:
            try:
                return await self.dispatcher.request(
                    msg, addr, timeout=self.timeout,
                    retry=self.retry if msg.mtype == CON else None,
                )
            except aiodisp.DuplicateKeyError:  # the token or MID is pending: draw new ones
                msg = dataclasses.replace(
                    msg, mid=next(self._mids), token=secrets.token_bytes(4)
                )

    async def get(self, addr: Any, path: str, *, confirmable: bool = True) -> CoapMessage:
        """GET ``path``; raises :class:`CoapError` unless the response is 2.xx."""
        return _ok(await self.request(self.message(GET, path, confirmable=confirmable), addr))

    async def put(
        self, addr: Any, path: str, payload: bytes, *, confirmable: bool = True
    ) -> CoapMessage:
        """PUT ``payload`` at ``path``; raises :class:`CoapError` unless 2.xx."""
        msg = self.message(PUT, path, payload, confirmable=confirmable)
        return _ok(await self.request(msg, addr))

    async def ping(self, addr: Any) -> float:
        """CoAP ping (RFC 7252 §4.3): an empty CON, answered by an RST. Returns the seconds taken.

        The RST is the peer's "pong": aiodisp reports it as
        :class:`aiodisp.PeerRejected`, which is what this method waits for.
        """
        start = time.perf_counter()
        try:
            await self.dispatcher.request(
                CoapMessage(CON, EMPTY, next(self._mids)), addr,
                timeout=self.timeout, retry=self.retry,
            )
        except aiodisp.PeerRejected:
            return time.perf_counter() - start
        raise aiodisp.DispatchError(f"{addr!r} answered a ping with something other than RST")


def _ok(response: CoapMessage) -> CoapMessage:
    if response.code >> 5 != 2:
        raise CoapError(response)
    return response


# ---------------------------------------------------------------------- the server

#: A resource: bytes (GET returns them, PUT replaces them), or a function
#: ``(request) -> (code, payload)`` run for any method.
Resource = bytes | Callable[[CoapMessage], tuple[int, bytes]]


class CoapServer:
    """A CoAP server on one UDP socket: GET and PUT on in-memory resources.

    ``resources`` maps a path ("a/b") to bytes or to a function. Paths in
    ``slow`` are answered with a separate response ``delay`` seconds later (an
    empty ACK at once, then the response as a CON that is retransmitted until
    the client ACKs it); the others piggybacked. A GET with Observe=0 registers
    the client for :meth:`push`. Pings are answered with an RST by the
    dispatcher itself.
    """

    def __init__(
        self,
        dispatcher: aiodisp.Dispatcher[CoapMessage],
        *,
        slow: Iterable[str] = (),
        delay: float = 0.05,
        retry: aiodisp.RetryPolicy = CON_RETRY,
    ) -> None:
        self.dispatcher = dispatcher
        self.resources: dict[str, Resource] = {}
        self.slow = set(slow)
        self.delay = delay
        self.retry = retry
        self.handled = 0
        # path -> {(addr, token): observe sequence number}
        self.observers: dict[str, dict[tuple[Any, bytes], int]] = {}
        self._mids = MessageIds()

    @classmethod
    async def open(
        cls,
        local_addr: tuple[str, int] = ("127.0.0.1", 5683),
        *,
        slow: Iterable[str] = (),
        delay: float = 0.05,
        retry: aiodisp.RetryPolicy = CON_RETRY,
    ) -> CoapServer:
        slow = set(slow)
        adapter = CoapAdapter(separate=lambda msg: msg.path in slow)
        d = await aiodisp.open_udp(adapter, local_addr, framing="raw")
        return cls(d, slow=slow, delay=delay, retry=retry)

    @property
    def local_addr(self) -> Any:
        return self.dispatcher.local_addr

    async def serve(self) -> None:
        """Answer requests until :meth:`close`."""
        await self.dispatcher.serve(self._handle, concurrency=256)

    async def close(self) -> None:
        await self.dispatcher.close()

    def respond(
        self, request: CoapMessage, addr: Any
    ) -> tuple[int, bytes, tuple[tuple[int, bytes], ...]]:
        """The code, payload and options answering ``request`` from ``addr``."""
        self.handled += 1
        path = request.path
        resource = self.resources.get(path)
        if callable(resource):
            status, body = resource(request)
            return status, body, ()
        if request.code == PUT:
            created = resource is None
            self.resources[path] = request.payload
            return (CREATED if created else CHANGED), b"", ()
        if resource is None:
            return NOT_FOUND, b"", ()
        if request.code != GET:
            return METHOD_NOT_ALLOWED, b"", ()
        if request.observe == 0:
            seq = self.observers.setdefault(path, {}).setdefault(
                (addr, request.token), 1
            )
            return CONTENT, resource, (uint_option(OBSERVE, seq),)
        return CONTENT, resource, ()

    async def _handle(self, request: CoapMessage, addr: Any) -> CoapMessage | None:
        status, body, options = self.respond(request, addr)
        if request.mtype == CON and request.path not in self.slow:
            # piggybacked: the response is the ACK, with the request's Message ID
            return CoapMessage(ACK, status, request.mid, request.token, options, body)
        if request.mtype == CON:
            # separate: the empty ACK went out already (ack_for); the response is a CON
            await asyncio.sleep(self.delay)
            response = CoapMessage(CON, status, next(self._mids), request.token, options, body)
            try:
                await self.dispatcher.notify(response, addr, retry=self.retry)
            except aiodisp.DispatchError:
                pass  # the client went away (timeout) or refused it (RST)
            return None
        return CoapMessage(NON, status, next(self._mids), request.token, options, body)

    async def push(self, path: str, body: bytes | None = None) -> int:
        """Send the resource at ``path`` to its observers as CON notifications.

        Each notification goes out with ``notify()``: it returns once the
        observer's ACK arrives (retransmitted until then). An observer that
        answers with an RST is forgotten (RFC 7641 §3.6). Returns how many
        observers ACKed.
        """
        if body is not None:
            self.resources[path] = body
        resource = self.resources[path]
        assert isinstance(resource, bytes)
        observers = self.observers.get(path, {})

        async def one(peer: tuple[Any, bytes], seq: int) -> bool:
            addr, token = peer
            observers[peer] = seq = (seq + 1) & 0xFFFFFF
            msg = CoapMessage(CON, CONTENT, next(self._mids), token,
                              (uint_option(OBSERVE, seq),), resource)
            try:
                await self.dispatcher.notify(msg, addr, retry=self.retry)
            except aiodisp.PeerRejected:
                observers.pop(peer, None)
                return False
            return True

        done = await asyncio.gather(*(one(p, s) for p, s in list(observers.items())))
        return sum(done)


# ---------------------------------------------------------------------- the script


def _target(uri: str) -> tuple[tuple[str, int], str]:
    parts = urlsplit(uri if "://" in uri else f"coap://{uri}")
    if parts.scheme != "coap" or not parts.hostname:
        raise argparse.ArgumentTypeError(f"{uri!r} is not a coap://HOST[:PORT]/PATH URI")
    return (parts.hostname, parts.port or 5683), parts.path


async def _client_main(args: argparse.Namespace) -> int:
    (addr, path) = args.uri
    async with await CoapClient.open(("::", 0) if ":" in addr[0] else ("0.0.0.0", 0),
                                     timeout=args.timeout) as client:
        try:
            if args.command == "ping":
                print(f"pong from {addr[0]}:{addr[1]} in {await client.ping(addr) * 1e3:.1f} ms")
                return 0
            if args.command == "get":
                response = await client.get(addr, path, confirmable=not args.non)
            else:
                response = await client.put(addr, path, args.payload.encode(),
                                            confirmable=not args.non)
        except (CoapError, aiodisp.DispatchError) as exc:
            print(f"{args.command} {path}: {exc}", file=sys.stderr)
            return 1
    print(f"{code_text(response.code)} {response.payload.decode('utf-8', 'replace')}".rstrip())
    return 0


async def _server_main(args: argparse.Namespace) -> int:
    server = await CoapServer.open((args.host, args.port), slow=["slow"])
    server.resources.update({"hello": b"world", "slow": b"worth the wait"})
    print(f"serving CoAP on {server.local_addr[0]}:{server.local_addr[1]}", flush=True)
    try:
        await server.serve()
    finally:
        await server.close()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="A CoAP client and server on aiodisp.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("get", "put", "ping"):
        cmd = sub.add_parser(name)
        cmd.add_argument("uri", type=_target, help="coap://HOST[:PORT]/PATH")
        if name == "put":
            cmd.add_argument("payload")
        if name != "ping":
            cmd.add_argument("--non", action="store_true", help="non-confirmable")
        cmd.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT)
    serve = sub.add_parser("serve")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=5683)
    args: Any = parser.parse_args(argv)
    try:
        return asyncio.run(_server_main(args) if args.command == "serve" else _client_main(args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
