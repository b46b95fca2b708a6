"""Coverage-guided fuzz target: the ACK-framing decoder and ``Endpoint.receive``.

With atheris installed (``pip install atheris``; not a dependency of aiodisp)::

    python fuzz/fuzz_receive.py -max_total_time=300 fuzz/corpus

Without it, the same target replays inputs or runs random ones, so it can be
checked anywhere (the test suite does so)::

    python fuzz/fuzz_receive.py fuzz/corpus some-crash-file   # replay files / folders
    python fuzz/fuzz_receive.py --random 10000                # random inputs
    python fuzz/fuzz_receive.py --seeds fuzz/corpus           # write the seed inputs

One input drives one sans-I/O endpoint through a script of operations (see
:func:`run`); any exception other than the documented API errors, and any
broken invariant, is a finding. See fuzz/README.md.
"""

from __future__ import annotations

import contextlib
import random
import struct
import sys
from collections.abc import Hashable, Iterator
from pathlib import Path
from typing import Any

try:
    import atheris
except ImportError:  # the target still runs without it, uninstrumented
    atheris = None

_instrument = atheris.instrument_imports() if atheris is not None else contextlib.nullcontext()
with _instrument:
    from aiodisp._core.bundling import FLAG_BUNDLE, pack_bundle
    from aiodisp._core.endpoint import Endpoint
    from aiodisp._core.framing import (
        FLAG_ACK,
        HEADER_SIZE,
        ID_MASK,
        pack_header,
        unpack_header,
    )
    from aiodisp.errors import DuplicateKeyError
    from aiodisp.retry import RetryPolicy

MAX_QUEUE = 4
DEDUP_CAPACITY = 8
MAX_DATAGRAM = 512
#: Where datagrams come from: two peers requests go to, an attacker, odd address forms.
ADDRESSES: tuple[Any, ...] = (
    ("10.0.0.1", 1000), ("10.0.0.2", 2000), ("10.6.6.6", 666), None, "/run/x.sock",
    ("::1", 7, 0, 0), b"", 0, ["unhashable"],
)
#: Every received datagram lands in exactly one of these counters.
OUTCOMES = (
    "delivered", "replies_matched", "acks_received", "duplicates", "unknown_replies",
    "wrong_source", "unknown_acks", "header_errors", "decode_errors", "empty", "oversize",
    "queue_drops",
)


class KeyAdapter:
    """8-byte big-endian key then payload; no is_reply (a reply is a pending key)."""

    def msg_to_raw(self, msg: tuple[int, bytes]) -> bytes:
        return struct.pack(">Q", msg[0]) + msg[1]

    def raw_to_msg(self, raw: bytes) -> tuple[int, bytes]:
        return struct.unpack_from(">Q", raw)[0], bytes(raw[8:])

    def msg_key(self, msg: tuple[int, bytes]) -> Hashable:
        return msg[0]


class ReplyAdapter(KeyAdapter):
    """Like KeyAdapter, with is_reply (top bit of the key) and failures on command."""

    def raw_to_msg(self, raw: bytes) -> Any:
        key, payload = super().raw_to_msg(raw)
        if payload[:1] == b"!":
            raise ValueError("the adapter refuses this")
        if payload[:1] == b"?":
            return None
        return key, payload

    def msg_key(self, msg: Any) -> Hashable:
        if msg[1][:1] == b"[":
            return [msg[0]]  # type: ignore[return-value]  # unhashable junk
        return msg[0] & ~(1 << 63)

    def is_reply(self, msg: Any) -> bool:
        if msg[1][:1] == b"~":
            raise RuntimeError("cannot tell")
        return bool(msg[0] >> 63)


class Input:
    """Reads the fuzzer's bytes as small integers and byte strings."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def left(self) -> int:
        return len(self.data) - self.pos

    def byte(self) -> int:
        if self.pos >= len(self.data):
            return 0
        self.pos += 1
        return self.data[self.pos - 1]

    def take(self, n: int) -> bytes:
        chunk = self.data[self.pos:self.pos + n]
        self.pos += len(chunk)
        return chunk


def _check_framing(datagram: bytes) -> None:
    """The header decoder agrees with its encoder on any 8 bytes."""
    if len(datagram) >= HEADER_SIZE:
        flags, packet_id = unpack_header(datagram)
        assert 0 <= flags <= 0xFF and 0 <= packet_id <= ID_MASK
        assert pack_header(flags, packet_id) == datagram[:HEADER_SIZE]


def _check(e: Endpoint[Any], requests: dict[Hashable, Any], acking: dict[int, Any]) -> None:
    c = e.counters
    assert sum(getattr(c, name) for name in OUTCOMES) == c.received, "unaccounted datagram"
    assert len(e.inbox) <= MAX_QUEUE
    assert len(e.log) <= DEDUP_CAPACITY and e.log.replies_indexed <= len(e.log)
    assert set(e.waiting) == set(requests) and set(e.acking) == set(acking)
    for datagram, _ in e.outbox:
        assert len(datagram) <= MAX_DATAGRAM


def run(data: bytes) -> None:
    """One fuzz case. Byte 0 picks the set-up; then each operation is one byte
    (low 3 bits: which; high bits: an address or a key) and its operands:

    0-3 receive a datagram (1-byte length, then that many bytes) from an address;
    4   start a request (key: high bits) to a peer; 5 start a notify;
    6   let time pass (next byte: tenths of a second) and run the timers;
    7   the application reads one message, or a call is cancelled.
    """
    inp = Input(data)
    setup = inp.byte()
    framing = "ack" if setup & 1 else "raw"
    adapter: Any = ReplyAdapter() if setup & 2 else KeyAdapter()
    e: Endpoint[Any] = Endpoint(
        adapter, framing=framing, max_datagram_size=MAX_DATAGRAM, max_queue=MAX_QUEUE,  # type: ignore[arg-type]
        check_source=not setup & 4, dedup_ttl=1.0, dedup_capacity=DEDUP_CAPACITY,
        seed=setup,
    )
    policy = RetryPolicy(initial_timeout=0.1, max_attempts=3, jitter=0.0)
    now = 0.0
    requests: dict[Hashable, Any] = {}
    acking: dict[int, Any] = {}

    def finished(p: Any) -> None:
        assert p.done
        if requests.get(p.key) is p:
            del requests[p.key]
        acking.pop(p.packet_id, None)

    while inp.left():
        op = inp.byte()
        which, arg = op & 7, op >> 3
        if which <= 3:
            datagram = inp.take(inp.byte() * (2 if which == 3 else 1))
            addr = ADDRESSES[arg % len(ADDRESSES)]
            _check_framing(datagram)
            done = e.receive(datagram, addr, now)
            # (a bundle's datagrams leave the calls they complete in e.completed)
            for p in [done] if done is not None else e.completed:
                assert p.addr == addr or not e.check_source, "a call completed by a stranger"
                finished(p)
            e.completed.clear()
        elif which == 4:
            key = arg % 8
            try:
                p = e.start_request((key, b"q"), ADDRESSES[arg % 2], object(), now, 2.0,
                                    policy if arg & 1 else None)
            except DuplicateKeyError:
                assert key in requests
            else:
                requests[key] = p
        elif which == 5 and e.ack:
            p = e.start_notify((9, b"n"), ADDRESSES[arg % 2], object(), now, 2.0, policy)
            acking[p.packet_id] = p
            # the peer's ACK, maybe from the wrong address: the next bytes decide
            sender = ADDRESSES[inp.byte() % len(ADDRESSES)]
            done = e.receive(pack_header(FLAG_ACK, p.packet_id), sender, now)
            if done is not None:
                assert done is p and (sender == p.addr or not e.check_source)
                finished(done)
        elif which == 6:
            now += inp.byte() / 10
            for p in e.handle_timer(now):
                finished(p)
        elif which == 7:
            if arg & 1 and requests:
                p = requests.pop(next(iter(requests)))
                e.cancel(p)
            elif e.inbox:
                e.inbox.popleft()
        _check(e, requests, acking)
        e.outbox.clear()


def TestOneInput(data: bytes) -> None:  # the name atheris calls
    run(data)


# ---------------------------------------------------------------------- seeds and replay


def seeds() -> Iterator[tuple[str, bytes]]:
    """Hand-made inputs that reach every branch quickly (a starting corpus)."""
    key = struct.pack(">Q", 3)
    reply_key = struct.pack(">Q", 3 | 1 << 63)
    header = pack_header(0, 5)
    # request key 3 to ADDRESSES[1], then its reply from ADDRESSES[1] (op 0 | 1 << 3)
    yield "request-then-reply", bytes([3, 4 | 3 << 3, 1 << 3, len(header + reply_key)]) + (
        header + reply_key)
    yield "forged-reply", bytes([3, 4 | 3 << 3, 2 << 3, len(header + reply_key)]) + (
        header + reply_key)
    yield "raw-reply-without-is-reply", bytes([0, 4 | 3 << 3, 1 << 3, 8]) + key
    yield "raw-stranger-with-our-key", bytes([0, 4 | 3 << 3, 0, 8]) + key
    yield "notify-acked", bytes([1, 5, 0])
    yield "notify-forged-ack", bytes([1, 5, 2])
    yield "garbage", bytes([1, 0, 3]) + b"\x01\x02\x03"
    yield "retransmit-timeout", bytes([3, 4 | 1 << 3, 6, 5, 6, 30])
    dup = pack_header(1, 9) + key + b"x"
    yield "duplicate", bytes([1, 0, len(dup)]) + dup + bytes([0, len(dup)]) + dup
    junk = pack_header(0, 7) + key + b"!"
    yield "adapter-raises", bytes([3, 0, len(junk)]) + junk
    full = b"".join(bytes([0, 17]) + pack_header(0, i) + key + b"y" for i in range(8))
    yield "queue-full", bytes([1]) + full
    # a bundle (coalesce=True): the reply to request 3, a message asking for an ACK,
    # and an ACK for nothing, in one datagram from ADDRESSES[1]
    bundle = pack_bundle([header + reply_key, pack_header(1, 11) + key + b"z",
                          pack_header(FLAG_ACK, 12)])
    yield "bundle", bytes([3, 4 | 3 << 3, 1 << 3, len(bundle)]) + bundle
    bad = bytes([FLAG_BUNDLE]) + bytes([0, 9]) + header + b"!" + bytes([0, 40]) + header
    yield "truncated-bundle", bytes([3, 1 << 3, len(bad)]) + bad


def _inputs(paths: list[str]) -> Iterator[tuple[str, bytes]]:
    for name in paths:
        path = Path(name)
        for file in sorted(path.iterdir()) if path.is_dir() else [path]:
            yield str(file), file.read_bytes()


def main(argv: list[str]) -> int:
    if argv[:1] == ["--seeds"]:
        folder = Path(argv[1])
        folder.mkdir(parents=True, exist_ok=True)
        for name, data in seeds():
            (folder / name).write_bytes(data)
        return 0
    if argv[:1] == ["--random"]:
        rng = random.Random(int(argv[2]) if len(argv) > 2 else None)
        count = int(argv[1])
        for _ in range(count):
            run(rng.randbytes(rng.randrange(0, 300)))
        print(f"{count} random inputs: no finding")
        return 0
    replay = bool(argv) and all(Path(a).is_file() for a in argv)
    if atheris is not None and not replay:
        atheris.Setup([sys.argv[0], *argv], TestOneInput)
        atheris.Fuzz()
        return 0
    count = 0
    for _, data in [*seeds(), *_inputs([a for a in argv if not a.startswith("-")])]:
        run(data)
        count += 1
    print(f"{count} inputs replayed: no finding")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

