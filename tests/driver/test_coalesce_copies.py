"""The driver's inlined copy of ``Bundler.add`` (``Dispatcher._coalescer``) packs as
``add`` does: the same frames to the same destinations give the same datagrams."""

from __future__ import annotations

import asyncio
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

import aiodisp
from aiodisp._core.bundling import Bundler
from tests.helpers.adapters import KeyAdapter
from tests.helpers.carriers import ScriptedCarrier

FRAMES = st.lists(
    st.tuples(st.sampled_from(["a", "b", "c"]),
              st.integers(8, 40) | st.integers(8, 700)
              | st.sampled_from([297, 298, 299, 1197, 1198, 1199])),
    max_size=60,
)


Rounds = list[list[tuple[str, bytes]]]


def by_add(rounds: Rounds, limit: int) -> list[tuple[bytes, Any]]:
    bundler = Bundler(limit)
    out: list[tuple[bytes, Any]] = []
    for sends in rounds:  # one loop iteration each, then its flush
        for addr, frame in sends:
            if bundler.add(frame, addr):
                out += [(d, a) for d, a, _ in bundler.take_ready()]
        out += [(d, a) for d, a, _ in bundler.drain()]
    return out


async def by_driver(rounds: Rounds) -> tuple[list[tuple[bytes, Any]], int]:
    carrier = ScriptedCarrier()
    d: aiodisp.Dispatcher[Any] = aiodisp.Dispatcher(carrier, KeyAdapter())
    assert d._bundler is not None
    for sends in rounds:
        for addr, frame in sends:
            d._send(frame, addr)
        await asyncio.sleep(0)  # the flush
        await asyncio.sleep(0)
    limit = d._bundler.limit
    await d.close()
    return list(carrier.sent), limit


@settings(max_examples=60, deadline=None)
@given(st.lists(FRAMES, min_size=1, max_size=3))
def test_the_inlined_add_packs_as_add_does(spec: list[list[tuple[str, int]]]) -> None:
    """Over several iterations: each iteration's flush sets how many frames the next
    iteration's bundles may hold (Bundler.max_parts), which both must follow."""
    rounds = [[(addr, bytes([i % 7]) * n) for i, (addr, n) in enumerate(r)] for r in spec]
    sent, limit = asyncio.run(by_driver(rounds))
    assert sent == by_add(rounds, limit)
