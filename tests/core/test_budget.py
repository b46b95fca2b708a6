"""The retry budget on a fake clock: a ratio of first sends plus a floor, per 10 s."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aiodisp import RetryBudget
from aiodisp._core.budget import WINDOW, RetryAccount


def test_the_default_budget_is_a_fifth_of_first_sends_plus_ten_a_second() -> None:
    budget = RetryBudget()
    assert (budget.ratio, budget.min_per_second) == (0.2, 10.0)
    assert budget.floor == 100.0
    assert budget.allowance(1000) == 300.0


@pytest.mark.parametrize("field", ["ratio", "min_per_second"])
@pytest.mark.parametrize("value", [-0.1, math.inf, math.nan])
def test_a_negative_or_infinite_figure_is_refused(field: str, value: float) -> None:
    with pytest.raises(ValueError):
        RetryBudget(**{field: value})


@pytest.mark.parametrize("value", ["1", None, True])
def test_a_figure_that_is_not_a_number_is_refused(value: object) -> None:
    with pytest.raises(TypeError):
        RetryBudget(ratio=value)  # type: ignore[arg-type]


def test_a_peer_with_no_first_sends_gets_the_floor_then_nothing_until_it_ages_out() -> None:
    budget = RetryBudget(ratio=0.2, min_per_second=10.0)
    account = RetryAccount(0.0)
    granted = sum(account.withdraw(budget, 0, 0.001 * i) for i in range(500))
    assert granted == 100
    assert not account.withdraw(budget, 0, 5.0)
    # a whole window later the spending has aged out
    assert account.withdraw(budget, 0, 0.5 + WINDOW + 1.0)


def test_first_sends_in_the_window_buy_retransmissions_at_the_ratio() -> None:
    budget = RetryBudget(ratio=0.2, min_per_second=1.0)  # floor 10
    account = RetryAccount(0.0)
    granted = sum(account.withdraw(budget, 1000, 0.5 + 0.001 * i) for i in range(1000))
    assert granted == 0.2 * 1000 + 10


def test_first_sends_older_than_the_window_buy_nothing() -> None:
    budget = RetryBudget(ratio=0.5, min_per_second=0.0)
    account = RetryAccount(0.0)
    assert account.withdraw(budget, 10, 1.0)  # 10 first sends since the start: 5 allowed
    # 11 s later those sends have left the window; the 10 new ones since count
    granted = sum(account.withdraw(budget, 20, 12.0 + 0.01 * i) for i in range(20))
    assert granted == 0


def test_no_floor_and_no_ratio_allows_nothing() -> None:
    account = RetryAccount(0.0)
    assert not account.withdraw(RetryBudget(ratio=0.0, min_per_second=0.0), 10**6, 1.0)


@settings(max_examples=200, deadline=None)
@given(
    events=st.lists(
        st.tuples(st.floats(0.0, 2.0), st.booleans(), st.integers(0, 20)), max_size=120
    ),
    ratio=st.sampled_from([0.0, 0.1, 0.2, 1.0]),
    floor_rate=st.sampled_from([0.0, 0.5, 10.0]),
)
def test_retransmissions_in_any_window_stay_within_the_ratio_plus_the_floor(
    events: list[tuple[float, bool, int]], ratio: float, floor_rate: float
) -> None:
    """Whatever the mix of first sends and retransmission attempts over time, every
    10-second window holds at most ratio x first sends in it + the floor."""
    budget = RetryBudget(ratio=ratio, min_per_second=floor_rate)
    account = RetryAccount(0.0)
    now = 0.0
    sends = 0
    send_times: list[float] = []
    granted: list[float] = []
    for gap, is_send, count in events:
        now += gap
        if is_send:
            sends += count
            send_times += [now] * count
        else:
            for _ in range(count):
                if account.withdraw(budget, sends, now):
                    granted.append(now)
    for end in granted:
        in_window = [t for t in granted if end - WINDOW < t <= end]
        first = [t for t in send_times if end - WINDOW < t <= end]
        assert len(in_window) <= budget.allowance(len(first)) + 1e-9


def test_a_steady_peer_is_retried_at_about_the_ratio_plus_the_floor() -> None:
    """100 first sends a second and 50 retransmission attempts a second for 30 s:
    about 0.2 x 100 + 10 = 30 a second get through once the window is full."""
    budget = RetryBudget()
    account = RetryAccount(0.0)
    sends = 0
    granted_late = 0
    for ms in range(30_000):
        now = ms / 1000
        if ms % 10 == 0:
            sends += 1
        if ms % 20 == 0 and account.withdraw(budget, sends, now) and now >= 20.0:
            granted_late += 1
    assert 25 * 10 <= granted_late <= 30 * 10 + 1
