"""A small authoritative DNS zone and the ONE function that answers queries for it.

Every responder of ``dnsperf_serving.py`` (aiodisp's ``serve()`` and the
hand-rolled ones) answers with :func:`answer`, so what they differ in is how a
datagram reaches it and how the reply leaves, nothing else.

The zone: ``NAMES`` hosts ``host-<i>.bench.example``, each with an A record,
every fourth with an AAAA record too. :func:`answer` is what a lean
authoritative responder does per query: check the header (a query, opcode
QUERY, one question), find the end of the question name, look the question up
(name lower-cased, type, class) in a table of precomputed answers, and build
the response: the query's id, QR|AA and the query's RD bit, NOERROR with the
answer records, or NXDOMAIN (a name under the zone that does not exist) or
REFUSED (a name outside it). Malformed queries get FORMERR when they have a
header, nothing otherwise; responses are never answered.
"""

from __future__ import annotations

import random
import struct

__all__ = ["NAMES", "ORIGIN", "answer", "query_file_lines", "wire_query"]

ORIGIN = "bench.example"
NAMES = 1000
TTL = 300

_COUNTS = struct.Struct(">HHHH")
_RR_HEAD = struct.Struct(">HHHIH")  # name pointer, type, class, ttl, rdlength
_A, _AAAA, _IN = 1, 28, 1
_NOERROR, _FORMERR, _NXDOMAIN, _NOTIMP, _REFUSED = 0, 1, 3, 4, 5


def _wire_name(name: str) -> bytes:
    out = b""
    for label in name.rstrip(".").split("."):
        out += bytes((len(label),)) + label.encode("ascii")
    return out + b"\x00"


def _build_table() -> dict[bytes, tuple[bytes, bytes]]:
    """(wire name, type, class) -> (rcode and counts, answer records) for every name we have."""
    table: dict[bytes, tuple[bytes, bytes]] = {}
    for i in range(NAMES):
        wire = _wire_name(f"host-{i}.{ORIGIN}")
        a = _RR_HEAD.pack(0xC00C, _A, _IN, TTL, 4) + bytes((10, 0, i >> 8, i & 0xFF))
        one = bytes((_NOERROR,)) + _COUNTS.pack(1, 1, 0, 0)
        table[wire + struct.pack(">HH", _A, _IN)] = (one, a)
        if i % 4 == 0:
            aaaa = _RR_HEAD.pack(0xC00C, _AAAA, _IN, TTL, 16) + bytes(14) + i.to_bytes(2, "big")
            table[wire + struct.pack(">HH", _AAAA, _IN)] = (one, aaaa)
        else:  # the name exists, without AAAA: NOERROR, no answer
            table[wire + struct.pack(">HH", _AAAA, _IN)] = (
                bytes((_NOERROR,)) + _COUNTS.pack(1, 0, 0, 0), b"")
    return table


_TABLE = _build_table()
_SUFFIX = _wire_name(ORIGIN)
_NXDOMAIN_HEAD = bytes((_NXDOMAIN,)) + _COUNTS.pack(1, 0, 0, 0)
_REFUSED_HEAD = bytes((_REFUSED,)) + _COUNTS.pack(1, 0, 0, 0)
_BARE = _COUNTS.pack(0, 0, 0, 0)
_QD_ONE = b"\x00\x01"
_QR_AA = (b"\x84", b"\x85")  # the response's first flags byte, by the query's RD bit


def answer(query: bytes) -> bytes | None:
    """The response to the DNS ``query`` (wire format), or None to send nothing."""
    if len(query) < 12 or query[2] & 0x80:  # too short for a header, or a response
        return None
    flags = query[2]
    if flags & 0x78:  # opcode other than QUERY
        return query[:2] + bytes((0x80 | (flags & 0x79), _NOTIMP)) + _BARE
    if query[4:6] != _QD_ONE:
        return query[:2] + bytes((0x80 | (flags & 0x01), _FORMERR)) + _BARE
    # The question: the name (labels up to the root label), then type and class. Fast
    # path: the first zero byte from the name's start ends it if the table knows the
    # question (a table name is well-formed, so the labels' walk would end there too).
    qend = query.find(b"\x00", 12) + 5
    question = query[12:qend]
    found = _TABLE.get(question.lower())
    if found is not None:
        head, records = found
    else:
        qend = _question_end(query)
        if qend < 0:
            return query[:2] + bytes((0x80 | (flags & 0x01), _FORMERR)) + _BARE
        question = query[12:qend]
        found = _TABLE.get(question.lower())
        if found is not None:
            head, records = found
        else:
            known = question[:-4].lower().endswith(_SUFFIX)
            head, records = (_NXDOMAIN_HEAD if known else _REFUSED_HEAD), b""
    # id; QR and AA set, the query's RD bit kept, RA/Z/AD/CD clear; rcode and counts;
    # the question as asked; the answer records (their names point at the question's).
    return query[:2] + _QR_AA[flags & 0x01] + head + question + records


def _question_end(query: bytes) -> int:
    """Where the one question of ``query`` ends (-1: malformed), walking its labels."""
    pos = 12
    end = len(query)
    while pos < end:
        n = query[pos]
        if n == 0:
            return pos + 5 if pos + 5 <= end else -1
        if n > 63:  # no compression pointer in a question we answer
            return -1
        pos += n + 1
    return -1


def wire_query(qid: int, name: str, qtype: int = _A, rd: bool = True) -> bytes:
    """A query as dnsperf sends it (tests and the smoke run use it)."""
    head = struct.pack(">HBBHHHH", qid, 0x01 if rd else 0, 0, 1, 0, 0, 0)
    return head + _wire_name(name) + struct.pack(">HH", qtype, _IN)


def query_file_lines(count: int = 10_000, seed: int = 14) -> list[str]:
    """dnsperf's input: ``name type`` lines, 70 % A, 20 % AAAA, 10 % NXDOMAIN names."""
    rng = random.Random(seed)
    lines = []
    for _ in range(count):
        r = rng.random()
        i = rng.randrange(NAMES)
        if r < 0.7:
            lines.append(f"host-{i}.{ORIGIN} A")
        elif r < 0.9:
            lines.append(f"host-{i}.{ORIGIN} AAAA")
        else:
            lines.append(f"nohost-{i}.{ORIGIN} A")
    return lines
