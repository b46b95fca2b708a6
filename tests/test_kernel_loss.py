"""Reliable delivery through the real kernel: UDP over veth with nftables dropping 20%.

Each test builds its own pair of network namespaces (see ``kernel_peers.LossLab``):
the server in one, the client in the other, joined by a veth pair, and in each
an nftables rule that drops 20% of the dispatcher's UDP datagrams arriving
there, with a counter. The peers run as ``ip netns exec`` subprocesses and
report what they saw as JSON. Needs root, ``ip`` and ``nft``; skips otherwise.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from kernel_peers import LossLab, unavailable_reason

CALLS = 2000
LOSS_PERCENT = 20


@pytest.fixture(scope="module")
def kernel_lab_available() -> None:
    reason = unavailable_reason()
    if reason is not None:
        pytest.skip(reason)


@pytest.fixture
def lab(kernel_lab_available: None) -> Iterator[LossLab]:
    with LossLab(LOSS_PERCENT) as lab:
        yield lab


def assert_each_delivered_once(server: dict[str, Any]) -> None:
    counts = Counter(server["received"])
    twice = sorted(i for i, n in counts.items() if n > 1)
    missing = sorted(set(range(1, CALLS + 1)) - counts.keys())
    assert twice == [], f"delivered more than once: {twice[:20]}"
    assert missing == [], f"never delivered: {missing[:20]}"
    assert len(server["received"]) == CALLS
    assert server["mismatched"] == []
    assert server["stats"]["delivered"] == CALLS


def assert_kernel_dropped_both_ways(lab: LossLab) -> None:
    counters = lab.counters()
    for direction, counts in counters.items():
        assert counts["dropped"] > 0, f"nothing dropped {direction}: {counters}"
        # ~20% of thousands of packets: 10-30% is many standard deviations wide.
        assert 0.10 < counts["dropped"] / counts["seen"] < 0.30, counters


def test_notify_through_20_percent_kernel_loss_delivers_each_message_once(
    lab: LossLab,
) -> None:
    client, server = lab.exchange(
        "notify", "--count", str(CALLS), "--concurrency", "100", "--timeout", "30",
        # adaptive first wait (RTT-based), capped back-off so the tail stays short
        "--initial-timeout", "0", "--max-attempts", "0", "--max-interval", "0.5",
    )

    assert client["errors"] == []
    assert client["ok"] == CALLS
    assert client["stats"]["acks_received"] == CALLS
    assert client["stats"]["retransmissions"] > 0
    assert_each_delivered_once(server)
    assert server["stats"]["duplicates"] > 0  # copies whose ACK was lost: ACKed, not delivered
    assert_kernel_dropped_both_ways(lab)


def test_request_through_20_percent_kernel_loss_gets_every_reply_serving_each_once(
    lab: LossLab,
) -> None:
    client, server = lab.exchange(
        "request", "--count", str(CALLS), "--concurrency", "100", "--timeout", "15",
        "--initial-timeout", "0.05", "--max-attempts", "20", "--max-interval", "0.5",
    )

    assert client["errors"] == []
    assert client["ok"] == CALLS
    assert client["bad_replies"] == 0
    assert client["stats"]["replies_matched"] == CALLS
    assert client["stats"]["retransmissions"] > 0
    assert_each_delivered_once(server)
    assert server["stats"]["duplicates"] > 0  # retransmitted requests, not re-delivered
    assert server["stats"]["replies_resent"] > 0  # answered from the reply cache
    assert_kernel_dropped_both_ways(lab)


def test_the_duplicate_check_sees_duplicates_when_the_server_forgets_deliveries(
    lab: LossLab,
) -> None:
    # Negative control: with the delivery log's memory cut to nothing, the same
    # kernel loss must make the application see retransmitted copies, so the
    # exactly-once assertions above can fail.
    calls = 500
    client, server = lab.exchange(
        "notify", "--count", str(calls), "--concurrency", "100", "--timeout", "30",
        "--initial-timeout", "0", "--max-attempts", "0", "--max-interval", "0.5",
        server_args=("--dedup-ttl", "1e-9"),
    )

    assert client["ok"] == calls
    counts = Counter(server["received"])
    assert counts.keys() == set(range(1, calls + 1))
    assert len(server["received"]) > calls
