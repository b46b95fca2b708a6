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
              st.integers(8, 700) | st.sampled_from([297, 298, 299, 1197, 1198, 1199])),
    max_size=60,
)


def by_add(sends: list[tuple[str, bytes]], limit: int) -> list[tuple[bytes, Any]]:
    bundler = Bundler(limit)
    out: list[tuple[bytes, Any]] = []
    for addr, frame in sends:
        if bundler.add(frame, addr):
            out += [(d, a) for d, a, _ in bundler.take_ready()]
    return out + [(d, a) for d, a, _ in bundler.drain()]


async def by_driver(sends: list[tuple[str, bytes]]) -> tuple[list[tuple[bytes, Any]], int]:
    carrier = ScriptedCarrier()
    d: aiodisp.Dispatcher[Any] = aiodisp.Dispatcher(carrier, KeyAdapter())
    assert d._bundler is not None
    for addr, frame in sends:
        d._send(frame, addr)
    await asyncio.sleep(0)  # the flush
    await asyncio.sleep(0)
    limit = d._bundler.limit
    await d.close()
    return list(carrier.sent), limit


@settings(max_examples=60, deadline=None)
@given(FRAMES)
def test_the_inlined_add_packs_as_add_does(spec: list[tuple[str, int]]) -> None:
    sends = [(addr, bytes([i % 7]) * n) for i, (addr, n) in enumerate(spec)]
    sent, limit = asyncio.run(by_driver(sends))
    assert sent == by_add(sends, limit)
