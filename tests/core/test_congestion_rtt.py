"""Karn's rule and CoCoA's weak estimator: the timeout follows a path that got slower
even while every exchange on it is being retransmitted."""

from __future__ import annotations

from aiodisp._core.rtt import RttEstimator, RttTable


def test_strong_samples_alone_give_rfc_6298s_timeout() -> None:
    est = RttEstimator(0.25, 0.05, 5.0)
    for _ in range(50):
        est.sample(0.2)
    assert est.blend is None
    assert est.srtt is not None and abs(est.rto - (est.srtt + 4 * est.rttvar)) < 1e-12


def test_weak_samples_raise_a_timeout_that_strong_ones_no_longer_reach() -> None:
    """The path went from 20 ms to 600 ms: every exchange now times out at least
    once, so Karn's rule alone would keep the old timeout forever."""
    est = RttEstimator(0.25, 0.05, 5.0)
    for _ in range(50):
        est.sample(0.02)
    before = est.rto
    assert before < 0.1
    for _ in range(10):
        est.weak_sample(0.6 + before)  # answered after one retransmission
    assert est.rto > 0.5


def test_a_strong_sample_pulls_the_blend_half_way_and_a_weak_one_a_quarter() -> None:
    est = RttEstimator(1.0, 0.0, 60.0)
    est.weak_sample(2.0)  # weak estimate 2 + 1 = 3; blended with the initial 1.0
    assert est.blend == 0.25 * 3.0 + 0.75 * 1.0
    est.sample(0.5)  # strong estimate 0.5 + 4 * 0.25 = 1.5
    assert est.blend == 0.5 * 1.5 + 0.5 * 1.5


def test_the_table_keeps_weak_samples_per_peer() -> None:
    table = RttTable(initial=0.25)
    table.weak_sample("a", 3.0)
    assert table.rto("a") > 0.25 and table.rto("b") == 0.25
    table.weak_sample("a", -1.0)  # a clock that went back is ignored
