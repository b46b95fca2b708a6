"""Reliable delivery through the real kernel: UDP over veth with nftables dropping 20%.

Each test builds its own pair of network namespaces (see ``kernel_peers.LossLab``):
the server in one, the client in the other, joined by a veth pair, and in each
an nftables rule that drops 20% of the dispatcher's UDP datagrams arriving
there, with a counter. The peers run as ``ip netns exec`` subprocesses and
report what they saw as JSON. Needs root, ``ip`` and ``nft``; skips otherwise.

The last tests use the kernel's reliable carrier, a Unix datagram socket: they
need no root and pin down that a notification notify() reported as delivered
cannot be lost there either (over ACK framing notify() waits for the ACK on
every transport).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import tempfile
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

import aiodisp
from aiodisp.adapters import IdMessage, IdPrefixAdapter
from tests.helpers.kernel_peers import LossLab, unavailable_reason

CALLS = 2000
LOSS_PERCENT = 20
#: These tests are about exactly-once delivery through heavy random loss, not the
#: rate: at 20 % each way the congestion window (one or two calls) and the retry
#: budget (a fifth of first sends) would hold 100 calls in flight back for minutes.
#: benchmarks/congestion.py measures both at a real bottleneck.
NO_WINDOW = "--no-window"


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
        NO_WINDOW,
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
        NO_WINDOW,
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
        NO_WINDOW, server_args=("--dedup-ttl", "1e-9"),
    )

    assert client["ok"] == calls
    counts = Counter(server["received"])
    assert counts.keys() == set(range(1, calls + 1))
    assert len(server["received"]) > calls


# --------------------------------------------------------------------------- Unix datagram
# A Unix datagram socket is the kernel's reliable carrier: notify() over it sends
# once and waits for no ACK. These tests need no root; they show where a
# notification that notify() reported as sent can still be lost.

UNIX_LOSS = (
    "core bug: notify() over a reliable transport returns before the peer's dispatcher "
    "has the message"
)


@pytest.fixture
def unix_dir() -> Iterator[str]:
    # A short path: AF_UNIX addresses are limited to 107 bytes.
    path = tempfile.mkdtemp(prefix="aiodisp-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def mute_peer(unix_dir: str) -> Iterator[socket.socket]:
    """A Unix datagram socket that reads nothing until the test drains it."""
    peer = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    peer.bind(os.path.join(unix_dir, "peer"))
    peer.setblocking(False)
    yield peer
    peer.close()


def drain(peer: socket.socket) -> int:
    got = 0
    while True:
        try:
            peer.recv(65536)
        except BlockingIOError:
            return got
        got += 1


async def test_notify_over_unix_is_not_lost_when_the_receivers_queue_is_full(
    unix_dir: str,
) -> None:
    adapter = IdPrefixAdapter()
    server = await aiodisp.open_unix(adapter, os.path.join(unix_dir, "s"), max_queue=16)
    # (no window: every first copy must reach the server before the application reads)
    client = await aiodisp.open_unix(adapter, os.path.join(unix_dir, "c"), congestion=False)
    ids = range(1, 101)
    calls = [asyncio.create_task(client.notify(IdMessage(i), server.local_addr, timeout=10))
             for i in ids]
    got: list[int] = []
    try:
        async with asyncio.timeout(30):
            # The application reads nothing until every first copy has reached the server.
            while server.stats.received < len(ids):
                await asyncio.sleep(0.01)
            while server.queued or not all(c.done() for c in calls):
                with contextlib.suppress(aiodisp.RequestTimeout):
                    got.append((await server.recv_from(timeout=0.1)).msg.id)
        returned = [i for i, c in zip(ids, calls, strict=True) if c.exception() is None]
        assert returned == list(ids)
        assert sorted(got) == returned, f"{server.stats.queue_drops} dropped by the server"
    finally:
        for c in calls:
            c.cancel()
        await asyncio.gather(*calls, return_exceptions=True)
        await client.close()
        await server.close()


async def test_every_notify_that_returned_over_unix_reaches_the_peer_after_close(
    unix_dir: str, mute_peer: socket.socket,
) -> None:
    client = await aiodisp.open_unix(IdPrefixAdapter(), os.path.join(unix_dir, "c"))
    returned = 0
    try:
        for i in range(1, 301):
            try:
                async with asyncio.timeout(2):
                    await client.notify(IdMessage(i), mute_peer.getsockname(), timeout=0.3)
            except TimeoutError:  # RequestTimeout, or stuck: the peer is full either way
                break
            returned += 1
            if client.transport.queued >= 20:  # type: ignore[attr-defined]
                break
    finally:
        await client.close()
    assert drain(mute_peer) >= returned


async def test_notify_over_unix_to_a_peer_that_never_reads_times_out(
    unix_dir: str, mute_peer: socket.socket,
) -> None:
    client = await aiodisp.open_unix(IdPrefixAdapter(), os.path.join(unix_dir, "c"))
    try:
        with pytest.raises(aiodisp.RequestTimeout):
            async with asyncio.timeout(3):  # a built-in TimeoutError here means stuck
                for i in range(1, 1001):
                    await client.notify(IdMessage(i), mute_peer.getsockname(), timeout=0.3)
    finally:
        await client.close()
