"""A stalled server is not hit by a retry storm.

The server is a child process with a bound UDP socket, stopped with SIGSTOP:
its port stays open (no ICMP), nothing is answered, and every datagram sent
to it waits in its receive buffer (4 MiB: none is dropped). Once the test's
200 retrying requests have timed out, the child is continued and counts what
its socket holds: what a stalled server would have received. With the retry
budget that is at most 1.2 x the first sends plus the budget's floor
(``min_per_second`` x 10 s), with the congestion window on or off, with the
default adaptive policy or one that retries every 10 ms.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from typing import Any

import pytest

import aiodisp
from aiodisp._core.congestion import INITIAL_WINDOW
from tests.helpers.adapters import KeyAdapter

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="SIGSTOP and Linux buffers")

CHILD = textwrap.dedent("""
    import socket, sys
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    s.bind(("127.0.0.1", 0))
    print(s.getsockname()[1], flush=True)
    sys.stdin.readline()  # stopped here until continued and told to count
    s.setblocking(False)
    n = 0
    while True:
        try:
            s.recv(65536)
        except BlockingIOError:
            break
        n += 1
    print(n, flush=True)
""")

CALLS = 200
TIMEOUT = 1.5
AGGRESSIVE = aiodisp.RetryPolicy(initial_timeout=0.01, max_attempts=None, max_interval=0.05)


@pytest.fixture
def stalled() -> Iterator[tuple[subprocess.Popen[str], tuple[str, int]]]:
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None
        port = int(child.stdout.readline())
        os.kill(child.pid, signal.SIGSTOP)
        yield child, ("127.0.0.1", port)
    finally:
        if child.poll() is None:
            os.kill(child.pid, signal.SIGCONT)
            child.kill()
            child.communicate()


def received_by(child: subprocess.Popen[str]) -> int:
    """Continue the child and let it count the datagrams its socket holds."""
    os.kill(child.pid, signal.SIGCONT)
    out, _ = child.communicate("count\n", timeout=10)
    return int(out.split()[-1])


@pytest.mark.parametrize("congestion", [True, False], ids=["window", "no-window"])
@pytest.mark.parametrize("policy", [None, AGGRESSIVE], ids=["adaptive", "every-10ms"])
async def test_a_stalled_server_gets_at_most_a_fifth_more_than_first_sends_plus_the_floor(
    stalled: tuple[subprocess.Popen[str], tuple[str, int]],
    congestion: bool,
    policy: aiodisp.RetryPolicy | None,
) -> None:
    child, addr = stalled
    budget = aiodisp.RetryBudget()  # the default: ratio 0.2, 10 a second
    # (coalesce=False: the child counts datagrams, and here each carries one request)
    options: dict[str, Any] = {"congestion": congestion, "retry": policy, "coalesce": False}
    async with await aiodisp.open_udp(KeyAdapter(), ("127.0.0.1", 0), **options) as d:
        results = await asyncio.gather(
            *(d.request((i, b"x" * 32), addr, timeout=TIMEOUT) for i in range(CALLS)),
            return_exceptions=True,
        )
        stats = d.stats
    assert all(isinstance(r, aiodisp.RequestTimeout) for r in results)
    received = received_by(child)
    assert received == stats.requests + stats.retransmissions  # every datagram got there
    assert received <= 1.2 * stats.requests + budget.floor
    if not congestion:
        assert stats.requests == CALLS
        if policy is AGGRESSIVE:
            assert stats.budget_denied > 0  # the budget, not the policy, set the pace
    else:
        # the rest waited for the window and were never sent (a waiter woken as the
        # calls before it timed out may go with the moment it has left)
        assert stats.requests < 2 * INITIAL_WINDOW
