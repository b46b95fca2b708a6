from __future__ import annotations

import logging

import pytest

from aiodisp._ratelog import RateLimitedLog


def test_a_burst_per_reason_passes_then_the_rest_is_counted_and_flushed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [0.0]
    log = RateLimitedLog(logging.getLogger("aiodisp.test"), interval=10.0, burst=2,
                         clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="aiodisp.test"):
        passed = [log(logging.WARNING, "decode", "bad %d", i) for i in range(10)]
        assert passed == [True, True] + [False] * 8
        log(logging.WARNING, "header", "short")
        log.flush()
        log.flush()  # nothing more to say
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["bad 0", "bad 1", "short", "8 more decode messages held back"]


def test_the_next_window_reports_what_was_held_back(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    log = RateLimitedLog(logging.getLogger("aiodisp.test"), interval=10.0, burst=1,
                         clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="aiodisp.test"):
        for _ in range(4):
            log(logging.WARNING, "decode", "bad")
        now[0] = 10.0
        log(logging.WARNING, "decode", "bad again")
    assert caplog.records[-1].getMessage() == "bad again (3 more decode messages held back)"
