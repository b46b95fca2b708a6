"""Logging under attack is rate-limited: a flood yields a handful of lines and a summary.

Each drop reason may log ``burst`` (5) lines per ``interval`` (10 s); what is
held back is counted and summed up in the next line of that reason that passes.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
import socket
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

import aiodisp
import aiodisp._dispatcher as dispatcher_module
from aiodisp._core.framing import FLAG_ACK, pack_header
from aiodisp._ratelog import RateLimitedLog
from aiodisp.adapters import IdMessage, IdPrefixAdapter
from tests.helpers.flood import send_paced

HELD = re.compile(r"\((\d+) more (.+) messages held back\)$")


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    """Dispatchers made in the test log by a clock the test moves."""
    fake = FakeClock()
    monkeypatch.setattr(dispatcher_module, "RateLimitedLog",
                        functools.partial(RateLimitedLog, clock=fake))
    return fake


@pytest.fixture
def attacker() -> Iterator[socket.socket]:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock


def garbage(n: int) -> Iterator[bytes]:
    """``n`` bad datagrams cycling through four drop reasons."""
    kinds = (
        b"\x01\x02\x03",  # header
        b"",  # empty
        pack_header(0, 1) + b"\xff",  # decode
        pack_header(FLAG_ACK, 9),  # unknown ACK
    )
    for i in range(n):
        yield kinds[i % 4]


def aiodisp_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "aiodisp"]


async def test_ten_thousand_garbage_datagrams_log_a_handful_of_lines(
    caplog: pytest.LogCaptureFixture, attacker: socket.socket
) -> None:
    caplog.set_level(logging.DEBUG, logger="aiodisp")
    d = await aiodisp.open_udp(IdPrefixAdapter(), ("127.0.0.1", 0))
    async with d:
        await send_paced(attacker, garbage(10_000), d.local_addr, lambda: d.stats.received,
                         chunk=100)
        s = d.stats
        assert (s.header_errors, s.empty, s.decode_errors, s.unknown_acks) == (2500,) * 4
    records = aiodisp_records(caplog)
    # 5 per reason per 10 s; a run slower than 10 s may open a second window.
    assert 4 <= len(records) <= 4 * 5 * 2
    assert all(r.levelno == logging.WARNING for r in records)


async def test_held_back_lines_are_summed_up_in_the_next_line(
    caplog: pytest.LogCaptureFixture, attacker: socket.socket, clock: FakeClock
) -> None:
    caplog.set_level(logging.DEBUG, logger="aiodisp")
    d = await aiodisp.open_udp(IdPrefixAdapter(), ("127.0.0.1", 0))
    async with d:
        await send_paced(attacker, garbage(10_000), d.local_addr, lambda: d.stats.received,
                         chunk=100)
        records = aiodisp_records(caplog)
        by_reason = Counter(r.getMessage().split(": ")[1].split(" (")[0] for r in records)
        assert by_reason == {"header": 5, "empty": 5, "decode": 5, "unknown ACK": 5}
        assert not any(HELD.search(r.getMessage()) for r in records)
        caplog.clear()
        clock.now += 10.0  # a new window: the next line of each reason carries the summary
        await send_paced(attacker, garbage(4), d.local_addr, lambda: d.stats.received)
    records = aiodisp_records(caplog)
    assert len(records) == 4
    summaries = {}
    for r in records:
        match = HELD.search(r.getMessage())
        assert match is not None, r.getMessage()
        summaries[match.group(2)] = int(match.group(1))
    assert summaries == {"header": 2495, "empty": 2495, "decode": 2495, "unknown ACK": 2495}


async def test_spoofed_replies_are_rate_limited_too(
    caplog: pytest.LogCaptureFixture, attacker: socket.socket
) -> None:
    caplog.set_level(logging.DEBUG, logger="aiodisp")
    adapter = IdPrefixAdapter()
    d = await aiodisp.open_udp(adapter, ("127.0.0.1", 0))
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))
    try:
        async with d:
            call = asyncio.create_task(d.request(IdMessage(1), silent.getsockname(), timeout=30))
            await asyncio.sleep(0.01)
            forged = pack_header(0, 5) + adapter.msg_to_raw(IdMessage(1, b"", True))
            unknown = pack_header(0, 6) + adapter.msg_to_raw(IdMessage(2, b"", True))
            await send_paced(attacker, [forged, unknown] * 2000, d.local_addr,
                             lambda: d.stats.received, chunk=100)
            assert (d.stats.wrong_source, d.stats.unknown_replies) == (2000, 2000)
            call.cancel()
            with pytest.raises(asyncio.CancelledError):
                await call
    finally:
        silent.close()
    assert len(aiodisp_records(caplog)) <= 2 * 5 * 2


async def test_a_custom_logger_receives_the_lines(attacker: socket.socket) -> None:
    class Collect(logging.Handler):
        def __init__(self) -> None:
            super().__init__()
            self.lines: list[str] = []

        def emit(self, record: logging.LogRecord) -> None:
            self.lines.append(record.getMessage())

    logger = logging.getLogger("aiodisp.test.hostile.custom")
    logger.propagate = False
    handler = Collect()
    logger.addHandler(handler)
    try:
        d = await aiodisp.open_udp(IdPrefixAdapter(), ("127.0.0.1", 0), logger=logger)
        async with d:
            await send_paced(attacker, [b"\x01"] * 1000, d.local_addr, lambda: d.stats.received)
        assert 1 <= len(handler.lines) <= 10
        assert all("header" in line for line in handler.lines)
    finally:
        logger.removeHandler(handler)
        logger.propagate = True


# ---------------------------------------------------------------------- RateLimitedLog


def make_log(caplog: pytest.LogCaptureFixture, **kw: Any) -> tuple[RateLimitedLog, FakeClock]:
    caplog.set_level(logging.DEBUG, logger="aiodisp.test.ratelog")
    fake = FakeClock()
    return RateLimitedLog(logging.getLogger("aiodisp.test.ratelog"), clock=fake, **kw), fake


def test_each_reason_has_its_own_budget(caplog: pytest.LogCaptureFixture) -> None:
    log, _ = make_log(caplog, burst=3, interval=10.0)
    passed = [log(logging.WARNING, "a", "a %d", i) for i in range(100)]
    passed += [log(logging.WARNING, "b", "b %d", i) for i in range(100)]
    assert sum(passed) == 6
    assert [r.getMessage() for r in caplog.records] == ["a 0", "a 1", "a 2", "b 0", "b 1", "b 2"]


def test_a_new_window_reports_exactly_what_was_held_back(
    caplog: pytest.LogCaptureFixture,
) -> None:
    log, clock = make_log(caplog, burst=2, interval=5.0)
    for i in range(1000):
        log(logging.WARNING, "x", "x %d", i)
    clock.now += 4.999
    assert not log(logging.WARNING, "x", "still held")
    clock.now += 0.001
    assert log(logging.WARNING, "x", "next")
    assert caplog.records[-1].getMessage() == "next (999 more x messages held back)"
    assert log(logging.WARNING, "x", "after")  # the count starts again from zero
    assert caplog.records[-1].getMessage() == "after"
    assert not log(logging.WARNING, "x", "held again")


def test_disabled_level_costs_no_budget(caplog: pytest.LogCaptureFixture) -> None:
    log, _ = make_log(caplog, burst=1)
    logging.getLogger("aiodisp.test.ratelog").setLevel(logging.ERROR)
    try:
        assert not any(log(logging.WARNING, "x", "w") for _ in range(50))
        assert log(logging.ERROR, "x", "e")
        assert [r.getMessage() for r in caplog.records] == ["e"]
    finally:
        logging.getLogger("aiodisp.test.ratelog").setLevel(logging.NOTSET)
