"""A DNS stub resolver on aiodisp: a real protocol over raw UDP framing.

DNS messages carry their own key, the 16-bit message id, and say themselves
whether they are a response (the QR flag), so aiodisp speaks DNS with a
four-method adapter and ``framing="raw"``: the DNS message is the whole
datagram. aiodisp does the rest: many queries in flight on one socket, each
reply woken by its id *and* its source address (a forged answer from anywhere
else is dropped) *and* its question (``accept=``: an answer to another question
is dropped too, and the query keeps waiting), retransmission by a
:class:`aiodisp.RetryPolicy`, a timeout on every query, garbage datagrams
counted and ignored.

As a library::

    addresses = await resolve("example.com", "A", server=("127.0.0.1", 53))

    async with Resolver(("127.0.0.1", 53)) as resolver:     # one socket, many queries
        v4, v6 = await asyncio.gather(resolver.resolve("example.com", "A"),
                                      resolver.resolve("example.com", "AAAA"))

As a script::

    python examples/dns_resolver.py --server 127.0.0.1:53 example.com A AAAA

Not covered (a stub for a trusted, nearby server): TCP fallback for truncated
answers, EDNS, DNSSEC validation, caching, search domains.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from types import TracebackType
from typing import Any

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype

import aiodisp
from aiodisp.ids import RequestIds

#: Four sends, waiting 0.25, 0.5, 1 and 2 s: within the default 5 s timeout.
DEFAULT_RETRY = aiodisp.RetryPolicy(initial_timeout=0.25, backoff=2.0, max_attempts=4)
DEFAULT_TIMEOUT = 5.0


class DnsAdapter:
    """DNS messages for aiodisp: the wire format, keyed by the message id."""

    def msg_to_raw(self, msg: dns.message.Message) -> bytes:
        return msg.to_wire()

    def raw_to_msg(self, raw: bytes) -> dns.message.Message:
        return dns.message.from_wire(raw)  # raises on garbage: aiodisp drops and counts it

    def msg_key(self, msg: dns.message.Message) -> int:
        return msg.id

    def is_reply(self, msg: dns.message.Message) -> bool:
        return bool(msg.flags & dns.flags.QR)


class DnsError(Exception):
    """The server answered, but not with data: ``rcode`` says why (NXDOMAIN, REFUSED...)."""

    def __init__(self, name: str, rdtype: str, rcode: dns.rcode.Rcode, detail: str = "") -> None:
        self.name = name
        self.rdtype = rdtype
        self.rcode = rcode
        text = f"{name} {rdtype}: {dns.rcode.to_text(rcode)}"
        super().__init__(f"{text} ({detail})" if detail else text)


class Resolver:
    """Queries one DNS server over UDP from one socket; use it as an async context manager.

    ``server`` is ``(host, port)`` (IPv4 or IPv6). Each query ends within
    ``timeout`` seconds, sent up to ``retry.max_attempts`` times; when no
    answer came, :class:`aiodisp.RequestTimeout` is raised.
    """

    def __init__(
        self,
        server: tuple[str, int] = ("127.0.0.1", 53),
        *,
        timeout: float = DEFAULT_TIMEOUT,
        retry: aiodisp.RetryPolicy = DEFAULT_RETRY,
    ) -> None:
        self.server = server
        self.timeout = timeout
        self.retry = retry
        # Unguessable ids (from `secrets`), none repeated among the last 4096 drawn:
        # with 16 bits, an off-path forger must guess the id and the client port.
        self._ids = RequestIds(bits=16, window=4096)
        self._dispatcher: aiodisp.Dispatcher[dns.message.Message] | None = None

    async def open(self) -> None:
        if self._dispatcher is None:
            wildcard = "::" if ":" in self.server[0] else "0.0.0.0"
            self._dispatcher = await aiodisp.open_udp(DnsAdapter(), (wildcard, 0), framing="raw")

    async def close(self) -> None:
        if self._dispatcher is not None:
            await self._dispatcher.close()

    async def __aenter__(self) -> Resolver:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def stats(self) -> aiodisp.Stats:
        """The dispatcher's counters: sends, retransmissions, drops..."""
        return self._live().stats

    def _live(self) -> aiodisp.Dispatcher[dns.message.Message]:
        if self._dispatcher is None:
            raise RuntimeError("open the Resolver first (async with Resolver(...) as r)")
        return self._dispatcher

    async def query(self, name: str, rdtype: str = "A") -> dns.message.Message:
        """Ask the server; return its response whatever the rcode."""
        dispatcher = self._live()
        while True:
            query = dns.message.make_query(name, rdtype, id=next(self._ids))
            try:
                # accept=: an answer with our id from our server that answers another
                # question (RFC 5452 §9.1: id, question and class must all match) is
                # dropped, and the query keeps waiting for the genuine one
                response: dns.message.Message = await dispatcher.request(
                    query, self.server, timeout=self.timeout, retry=self.retry,
                    accept=query.is_response,
                )
            except aiodisp.DuplicateKeyError:
                continue  # this id is still pending from a long-running query: draw another
            return response

    async def resolve(self, name: str, rdtype: str = "A") -> list[str]:
        """The records of type ``rdtype`` answering ``name``, as text (empty if it has none).

        Raises :class:`DnsError` unless the server answers NOERROR.
        """
        response = await self.query(name, rdtype)
        rcode = response.rcode()
        if rcode != dns.rcode.NOERROR:
            raise DnsError(name, rdtype, rcode)
        if response.flags & dns.flags.TC:
            raise DnsError(name, rdtype, rcode, "truncated; TCP is not supported here")
        wanted = dns.rdatatype.from_text(rdtype)
        return [rd.to_text() for rrset in response.answer if rrset.rdtype == wanted for rd in rrset]


async def resolve(
    name: str,
    rdtype: str = "A",
    server: tuple[str, int] = ("127.0.0.1", 53),
    *,
    timeout: float = DEFAULT_TIMEOUT,
    retry: aiodisp.RetryPolicy = DEFAULT_RETRY,
) -> list[str]:
    """One query on a fresh socket: the records answering ``name`` (see Resolver.resolve)."""
    async with Resolver(server, timeout=timeout, retry=retry) as resolver:
        return await resolver.resolve(name, rdtype)


# ---------------------------------------------------------------------- the script


def _server(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = text, "53"
    host = host.removeprefix("[").removesuffix("]")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST, HOST:PORT or [IPV6]:PORT")
    return host, int(port)


async def _main(args: argparse.Namespace) -> int:
    retry = aiodisp.RetryPolicy(
        initial_timeout=max(args.timeout / (2 ** (args.retries + 1) - 1), 0.05),
        max_attempts=args.retries + 1,
    )
    status = 0
    async with Resolver(args.server, timeout=args.timeout, retry=retry) as resolver:
        results = await asyncio.gather(
            *(resolver.resolve(args.name, t) for t in args.types), return_exceptions=True
        )
    for rdtype, result in zip(args.types, results, strict=True):
        if isinstance(result, BaseException):
            if not isinstance(result, DnsError | aiodisp.DispatchError):
                raise result
            where = "" if isinstance(result, DnsError) else f"{args.name} {rdtype}: "
            print(f"{where}{result}", file=sys.stderr)
            status = 1
            continue
        for value in result:
            print(f"{args.name} {rdtype} {value}")
    return status


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Resolve a name with a DNS server over UDP.")
    parser.add_argument("name", help="the name to look up")
    parser.add_argument("types", nargs="*", default=["A"], metavar="TYPE", help="A, AAAA, MX...")
    parser.add_argument("--server", type=_server, default=("127.0.0.1", 53),
                        help="HOST[:PORT] or [IPV6]:PORT (default 127.0.0.1:53)")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT,
                        help="seconds per query, retries included (default 5)")
    parser.add_argument("--retries", type=int, default=3, help="sends after the first (3)")
    args: Any = parser.parse_args(argv)
    for t in args.types:
        try:
            dns.rdatatype.from_text(t)
        except dns.rdatatype.UnknownRdatatype:
            parser.error(f"unknown record type {t!r}")
    if args.timeout <= 0 or args.retries < 0:
        parser.error("--timeout must be positive and --retries not negative")
    return asyncio.run(_main(args))


if __name__ == "__main__":
    raise SystemExit(main())
