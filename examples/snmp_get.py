"""An SNMPv2c GET and GETBULK poller on aiodisp, with a small BER codec of its own.

SNMP (RFC 3416) is a one-layer protocol: a request's ``request-id`` comes back
in its Response PDU, so the adapter is ``msg_key = request_id`` and
``is_reply = (the PDU is a Response)``, over ``framing="raw"``. Every poll of
every agent goes through one UDP socket, with any number in flight; aiodisp
matches each response to its request by id *and* by the agent's address,
retransmits by a :class:`aiodisp.RetryPolicy` and bounds each request by a
timeout.

A response that carries the right id from the right agent but the wrong
community or version (RFC 3584 §4.1: it does not belong to this exchange) is
refused with ``request(..., accept=...)``: aiodisp drops it
(``stats.unaccepted``) and keeps waiting for the genuine one.

As a library::

    async with await SnmpClient.open(community=b"public") as client:
        values = await client.get(("127.0.0.1", 161), ["1.3.6.1.2.1.1.1.0"])
        rows = await client.get_bulk(("127.0.0.1", 161), ["1.3.6.1.2.1.2.2.1.2"], 10)
        results = await client.poll([agent1, agent2], ["1.3.6.1.2.1.1.3.0"])

As a script::

    python examples/snmp_get.py 127.0.0.1:161 1.3.6.1.2.1.1.1.0 1.3.6.1.2.1.1.5.0
    python examples/snmp_get.py --bulk 10 127.0.0.1:161 1.3.6.1.2.1.2.2.1.2

Not covered: SNMPv1 traps, SNMPv3 (USM and its engine discovery), SET.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import sys
from collections.abc import Iterable, Sequence
from types import TracebackType
from typing import Any

import aiodisp
from aiodisp.ids import RequestIds

# ---------------------------------------------------------------------- BER, as SNMP uses it

INTEGER, OCTET_STRING, NULL, OBJECT_ID, SEQUENCE = 0x02, 0x04, 0x05, 0x06, 0x30
IP_ADDRESS, COUNTER32, GAUGE32, TIMETICKS, OPAQUE, COUNTER64 = 0x40, 0x41, 0x42, 0x43, 0x44, 0x46
NO_SUCH_OBJECT, NO_SUCH_INSTANCE, END_OF_MIB_VIEW = 0x80, 0x81, 0x82

GET_REQUEST, GET_NEXT_REQUEST, RESPONSE, SET_REQUEST = 0xA0, 0xA1, 0xA2, 0xA3
GET_BULK_REQUEST, INFORM_REQUEST, SNMPV2_TRAP, REPORT = 0xA5, 0xA6, 0xA7, 0xA8
PDU_TYPES = frozenset({GET_REQUEST, GET_NEXT_REQUEST, RESPONSE, SET_REQUEST, GET_BULK_REQUEST,
                       INFORM_REQUEST, SNMPV2_TRAP, REPORT})

VERSION_2C = 1
_UNSIGNED = frozenset({COUNTER32, GAUGE32, TIMETICKS, COUNTER64})
_EXCEPTIONS = {NO_SUCH_OBJECT: "noSuchObject", NO_SUCH_INSTANCE: "noSuchInstance",
               END_OF_MIB_VIEW: "endOfMibView"}
ERRORS = ("noError", "tooBig", "noSuchName", "badValue", "readOnly", "genErr", "noAccess",
          "wrongType", "wrongLength", "wrongEncoding", "wrongValue", "noCreation",
          "inconsistentValue", "resourceUnavailable", "commitFailed", "undoFailed",
          "authorizationError", "notWritable", "inconsistentName")


def tlv(tag: int, content: bytes) -> bytes:
    """One BER element: tag, definite length (short or long form), content."""
    n = len(content)
    if n < 0x80:
        return bytes((tag, n)) + content
    size = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes((tag, 0x80 | len(size))) + size + content


def read_tlv(data: bytes, i: int, end: int) -> tuple[int, int, int]:
    """``(tag, start, stop)`` of the element at ``data[i]``, which must end by ``end``."""
    if i + 2 > end:
        raise ValueError("truncated BER element")
    tag = data[i]
    if tag & 0x1F == 0x1F:
        raise ValueError("multi-byte BER tags are not SNMP")
    n = data[i + 1]
    i += 2
    if n & 0x80:
        width = n & 0x7F
        if not 0 < width <= 4 or i + width > end:
            raise ValueError("bad BER length")
        n = int.from_bytes(data[i:i + width], "big")
        i += width
    if i + n > end:
        raise ValueError("BER element longer than its container")
    return tag, i, i + n


def encode_int(value: int, tag: int = INTEGER) -> bytes:
    if tag in _UNSIGNED:
        if value < 0:
            raise ValueError(f"an unsigned value cannot be {value}")
        content = value.to_bytes(value.bit_length() // 8 + 1, "big")  # room for a 0 sign bit
    else:
        content = value.to_bytes((value + (value < 0)).bit_length() // 8 + 1, "big", signed=True)
    return tlv(tag, content)


def decode_int(content: bytes, signed: bool = True) -> int:
    if not content:
        raise ValueError("an INTEGER with no content")
    return int.from_bytes(content, "big", signed=signed)


def encode_oid(oid: str) -> bytes:
    arcs = [int(arc) for arc in oid.strip(".").split(".")]
    if len(arcs) < 2 or arcs[0] > 2 or (arcs[0] < 2 and arcs[1] >= 40):
        raise ValueError(f"{oid!r} is not an OBJECT IDENTIFIER")
    out = bytearray()
    for arc in [40 * arcs[0] + arcs[1], *arcs[2:]]:
        if arc < 0:
            raise ValueError(f"{oid!r} has a negative arc")
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        out += bytes(reversed(chunk))
    return tlv(OBJECT_ID, bytes(out))


def decode_oid(content: bytes) -> str:
    if not content or content[-1] & 0x80:
        raise ValueError("a truncated OBJECT IDENTIFIER")
    arcs: list[int] = []
    value = 0
    for byte in content:
        value = (value << 7) | (byte & 0x7F)
        if not byte & 0x80:
            arcs.append(value)
            value = 0
    first = min(arcs[0] // 40, 2)
    return ".".join(map(str, (first, arcs[0] - 40 * first, *arcs[1:])))


# ---------------------------------------------------------------------- SNMP messages


@dataclasses.dataclass(frozen=True, slots=True)
class VarBind:
    """One variable: its OID, the BER tag of its value and the value.

    Values are ints (INTEGER, Counter32, Gauge32, TimeTicks, Counter64), bytes
    (OCTET STRING, Opaque), a dotted string (OBJECT IDENTIFIER, IpAddress), or
    None (NULL in a request; noSuchObject, noSuchInstance, endOfMibView, whose
    tag says which).
    """

    oid: str
    tag: int = NULL
    value: Any = None

    @property
    def exception(self) -> str | None:
        """noSuchObject, noSuchInstance or endOfMibView, or None for a real value."""
        return _EXCEPTIONS.get(self.tag)

    def __str__(self) -> str:
        if self.exception is not None:
            return f"{self.oid} = {self.exception}"
        value = self.value
        if isinstance(value, bytes):
            text = value.decode("utf-8", "replace")
            value = repr(text) if text.isprintable() else value.hex(":")
        return f"{self.oid} = {value}"


@dataclasses.dataclass(frozen=True, slots=True)
class SnmpMessage:
    """An SNMPv2c message. For GETBULK, ``error_status`` and ``error_index`` are
    non-repeaters and max-repetitions, as on the wire."""

    pdu_type: int
    request_id: int
    varbinds: tuple[VarBind, ...] = ()
    community: bytes = b"public"
    error_status: int = 0
    error_index: int = 0
    version: int = VERSION_2C

    @property
    def error(self) -> str | None:
        if not self.error_status or self.pdu_type == GET_BULK_REQUEST:
            return None
        if self.error_status < len(ERRORS):
            return ERRORS[self.error_status]
        return f"error {self.error_status}"


def _encode_value(vb: VarBind) -> bytes:
    tag, value = vb.tag, vb.value
    if tag in (NULL, NO_SUCH_OBJECT, NO_SUCH_INSTANCE, END_OF_MIB_VIEW):
        return tlv(tag, b"")
    if tag == INTEGER or tag in _UNSIGNED:
        return encode_int(value, tag)
    if tag in (OCTET_STRING, OPAQUE):
        return tlv(tag, bytes(value))
    if tag == OBJECT_ID:
        return encode_oid(value)
    if tag == IP_ADDRESS:
        return tlv(tag, bytes(int(part) for part in value.split(".")))
    raise ValueError(f"cannot encode a value with tag 0x{tag:02x}")


def _decode_value(tag: int, content: bytes) -> Any:
    if tag in (NULL, NO_SUCH_OBJECT, NO_SUCH_INSTANCE, END_OF_MIB_VIEW):
        return None
    if tag == INTEGER:
        return decode_int(content)
    if tag in _UNSIGNED:
        return decode_int(content, signed=False)
    if tag in (OCTET_STRING, OPAQUE):
        return bytes(content)
    if tag == OBJECT_ID:
        return decode_oid(content)
    if tag == IP_ADDRESS:
        if len(content) != 4:
            raise ValueError("an IpAddress is 4 bytes")
        return ".".join(map(str, content))
    raise ValueError(f"unknown value tag 0x{tag:02x}")


def encode(msg: SnmpMessage) -> bytes:
    varbinds = b"".join(
        tlv(SEQUENCE, encode_oid(vb.oid) + _encode_value(vb)) for vb in msg.varbinds
    )
    pdu = tlv(msg.pdu_type, encode_int(msg.request_id) + encode_int(msg.error_status)
              + encode_int(msg.error_index) + tlv(SEQUENCE, varbinds))
    return tlv(SEQUENCE, encode_int(msg.version) + tlv(OCTET_STRING, msg.community) + pdu)


def decode(data: bytes) -> SnmpMessage:
    """The message in ``data``; ValueError on anything that is not SNMPv1/v2c."""
    tag, i, end = read_tlv(data, 0, len(data))
    if tag != SEQUENCE or end != len(data):
        raise ValueError("not an SNMP message")
    fields: list[tuple[int, bytes]] = []
    for _ in range(2):
        tag, start, i = read_tlv(data, i, end)
        fields.append((tag, data[start:i]))
    (vtag, version), (ctag, community) = fields
    if vtag != INTEGER or ctag != OCTET_STRING:
        raise ValueError("bad SNMP message header")
    pdu_type, i, pdu_end = read_tlv(data, i, end)
    if pdu_type not in PDU_TYPES:
        raise ValueError(f"unknown PDU type 0x{pdu_type:02x}")
    numbers = []
    for _ in range(3):
        tag, start, i = read_tlv(data, i, pdu_end)
        if tag != INTEGER:
            raise ValueError("bad PDU header")
        numbers.append(decode_int(data[start:i]))
    tag, i, vb_end = read_tlv(data, i, pdu_end)
    if tag != SEQUENCE:
        raise ValueError("bad variable bindings")
    varbinds = []
    while i < vb_end:
        tag, start, i = read_tlv(data, i, vb_end)
        if tag != SEQUENCE:
            raise ValueError("bad variable binding")
        otag, ostart, j = read_tlv(data, start, i)
        vtag_, vstart, k = read_tlv(data, j, i)
        if otag != OBJECT_ID or k != i:
            raise ValueError("bad variable binding")
        varbinds.append(VarBind(decode_oid(data[ostart:j]), vtag_,
                                _decode_value(vtag_, data[vstart:k])))
    request_id, error_status, error_index = numbers
    return SnmpMessage(pdu_type, request_id, tuple(varbinds), bytes(community), error_status,
                       error_index, decode_int(version))


class SnmpAdapter:
    """SNMP messages for aiodisp: keyed by request-id; a Response (or Report) is a reply."""

    def msg_to_raw(self, msg: SnmpMessage) -> bytes:
        return encode(msg)

    def raw_to_msg(self, raw: bytes) -> SnmpMessage:
        return decode(raw)  # ValueError on garbage: aiodisp drops and counts it

    def msg_key(self, msg: SnmpMessage) -> int:
        return msg.request_id

    def is_reply(self, msg: SnmpMessage) -> bool:
        return msg.pdu_type in (RESPONSE, REPORT)


# ---------------------------------------------------------------------- the poller


class SnmpError(Exception):
    """The agent answered with an error-status (noSuchName, tooBig, genErr...)."""

    def __init__(self, response: SnmpMessage) -> None:
        self.response = response
        where = ""
        if 0 < response.error_index <= len(response.varbinds):
            where = f" at {response.varbinds[response.error_index - 1].oid}"
        super().__init__(f"{response.error}{where}")


#: Three sends, waiting 0.5, 1 and 2 s.
DEFAULT_RETRY = aiodisp.RetryPolicy(initial_timeout=0.5, backoff=2.0, max_attempts=3)
DEFAULT_TIMEOUT = 5.0


class SnmpClient:
    """An SNMPv2c manager on one UDP socket: GET and GETBULK to any number of agents."""

    def __init__(
        self,
        dispatcher: aiodisp.Dispatcher[SnmpMessage],
        *,
        community: bytes = b"public",
        timeout: float = DEFAULT_TIMEOUT,
        retry: aiodisp.RetryPolicy | None = DEFAULT_RETRY,
    ) -> None:
        self.dispatcher = dispatcher
        self.community = community
        self.timeout = timeout
        self.retry = retry
        # request-id is an Integer32: 31 random bits, none reused while it may be pending
        self._ids = RequestIds(bits=31, window=65536)

    @classmethod
    async def open(
        cls,
        local_addr: tuple[str, int] = ("0.0.0.0", 0),
        *,
        community: bytes = b"public",
        timeout: float = DEFAULT_TIMEOUT,
        retry: aiodisp.RetryPolicy | None = DEFAULT_RETRY,
    ) -> SnmpClient:
        d = await aiodisp.open_udp(SnmpAdapter(), local_addr, framing="raw")
        return cls(d, community=community, timeout=timeout, retry=retry)

    async def close(self) -> None:
        await self.dispatcher.close()

    async def __aenter__(self) -> SnmpClient:
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
        return self.dispatcher.stats

    async def request(
        self, pdu_type: int, addr: Any, oids: Iterable[str], a: int = 0, b: int = 0
    ) -> SnmpMessage:
        """Send one PDU; return the Response (raises :class:`SnmpError` on an error-status)."""
        varbinds = tuple(VarBind(oid) for oid in oids)
        community, version = self.community, VERSION_2C

        def ours(response: SnmpMessage) -> bool:
            # the same community and version as the request (RFC 3584 §4.1)
            return response.community == community and response.version == version

        while True:
            msg = SnmpMessage(pdu_type, next(self._ids), varbinds, community, a, b, version)
            try:
                response = await self.dispatcher.request(
                    msg, addr, timeout=self.timeout, retry=self.retry, accept=ours
                )
            except aiodisp.DuplicateKeyError:
                continue  # an id still pending from a long call: draw another
            break
        if response.error is not None:
            raise SnmpError(response)
        return response

    async def get(self, addr: Any, oids: Iterable[str]) -> list[VarBind]:
        """GET: one value per OID (an absent one as a noSuchObject/noSuchInstance VarBind)."""
        return list((await self.request(GET_REQUEST, addr, oids)).varbinds)

    async def get_bulk(
        self, addr: Any, oids: Iterable[str], max_repetitions: int = 10, non_repeaters: int = 0
    ) -> list[VarBind]:
        """GETBULK: the ``non_repeaters`` first OIDs' successors, then up to
        ``max_repetitions`` successors of each other one (interleaved, as on the wire)."""
        response = await self.request(GET_BULK_REQUEST, addr, oids, non_repeaters,
                                      max_repetitions)
        return list(response.varbinds)

    async def poll(
        self, agents: Iterable[Any], oids: Sequence[str]
    ) -> dict[Any, list[VarBind] | BaseException]:
        """GET ``oids`` from every agent at once; each agent's values, or why it failed."""
        agents = list(agents)
        results = await asyncio.gather(*(self.get(a, oids) for a in agents),
                                       return_exceptions=True)
        return dict(zip(agents, results, strict=True))


# ---------------------------------------------------------------------- the script


def _agent(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = text, "161"
    host = host.removeprefix("[").removesuffix("]")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST, HOST:PORT or [IPV6]:PORT")
    return host, int(port)


async def _main(args: argparse.Namespace) -> int:
    local = ("::", 0) if ":" in args.agents[0][0] else ("0.0.0.0", 0)
    async with await SnmpClient.open(local, community=args.community.encode(),
                                     timeout=args.timeout) as client:
        if args.bulk:
            try:
                values = await client.get_bulk(args.agents[0], args.oids, args.bulk)
            except (SnmpError, aiodisp.DispatchError) as exc:
                print(f"{args.agents[0][0]}: {exc}", file=sys.stderr)
                return 1
            results: dict[Any, list[VarBind] | BaseException] = {args.agents[0]: values}
        else:
            results = await client.poll(args.agents, args.oids)
    status = 0
    for (host, port), result in results.items():
        if isinstance(result, BaseException):
            if not isinstance(result, SnmpError | aiodisp.DispatchError):
                raise result
            print(f"{host}:{port}: {result}", file=sys.stderr)
            status = 1
            continue
        for vb in result:
            print(f"{host}:{port} {vb}")
    return status


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="SNMPv2c GET / GETBULK over UDP.")
    parser.add_argument("agents", type=lambda s: [_agent(a) for a in s.split(",")],
                        help="HOST[:PORT][,HOST[:PORT]...]: the agents to poll")
    parser.add_argument("oids", nargs="+", help="dotted OIDs, e.g. 1.3.6.1.2.1.1.1.0")
    parser.add_argument("--community", default="public")
    parser.add_argument("--bulk", type=int, default=0, metavar="N",
                        help="GETBULK with max-repetitions N (first agent only)")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT)
    args: Any = parser.parse_args(argv)
    for oid in args.oids:
        try:
            encode_oid(oid)
        except ValueError:
            parser.error(f"{oid!r} is not a dotted OID")
    return asyncio.run(_main(args))


if __name__ == "__main__":
    raise SystemExit(main())
