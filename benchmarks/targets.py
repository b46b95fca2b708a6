"""The issue's targets, checked against one run's rounds (ratios taken round by round)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from common import median

# A case is (mode, loop, in_flight, peer, variant); rounds[case] is a list of per-round dicts.
Case = tuple[str, str, int, str, str]
AT = 256


@dataclass
class Target:
    name: str
    measured: float
    required: float
    higher_is_better: bool = True
    unit: str = "x"

    @property
    def met(self) -> bool:
        if self.higher_is_better:
            return self.measured >= self.required
        return self.measured <= self.required

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "met": self.met}


def _ratio(
    rounds: dict[Case, list[dict[str, Any]]], a: Case, b: Case, key: str
) -> float | None:
    ra, rb = rounds.get(a), rounds.get(b)
    if not ra or not rb:
        return None
    pairs = [x[key] / y[key] for x, y in zip(ra, rb, strict=False) if y[key] > 0]
    return median(pairs) if pairs else None


def evaluate(rounds: dict[Case, list[dict[str, Any]]]) -> list[Target]:
    """Every target whose cases were measured in this run."""
    out: list[Target] = []

    def ratio_target(name: str, a: Case, b: Case, need: float, key: str = "requests_per_s",
                     higher: bool = True) -> None:
        r = _ratio(rounds, a, b, key)
        if r is not None:
            out.append(Target(name, r, need, higher))

    for framing in ("ack", "raw"):
        me = ("client", "uvloop", AT, "aiodisp", framing)
        ref = ("client", "uvloop", AT, "handrolled", "raw")
        ratio_target(f"client {framing}, uvloop: aiodisp / hand-rolled matcher", me, ref, 0.85)
        ratio_target(f"client {framing}, uvloop: p99 aiodisp / hand-rolled", me, ref, 1.3,
                     "p99_ms", higher=False)
        me = ("client", "asyncio", AT, "aiodisp", framing)
        ref = ("client", "asyncio", AT, "handrolled_reader", "raw")
        ratio_target(f"client {framing}, asyncio: aiodisp / add_reader-drain matcher", me, ref,
                     0.85)
        ratio_target(f"client {framing}, asyncio: p99 aiodisp / add_reader-drain", me, ref, 1.3,
                     "p99_ms", higher=False)
        e2e = rounds.get(("e2e", "uvloop", AT, "aiodisp", framing))
        if e2e:
            # issue 14: past a bare Go pipelined client (168k) with ACK framing's defaults
            need = 168_000 if framing == "ack" else 90_000
            out.append(Target(f"end to end {framing}, uvloop: aiodisp req/s",
                              median([r["requests_per_s"] for r in e2e]), need, unit="req/s"))
        if framing == "ack":  # issue 14: coalesce=True, the default over ACK framing
            ratio_target("end to end ack, uvloop: aiodisp / hand-rolled matcher",
                         ("e2e", "uvloop", AT, "aiodisp", "ack"),
                         ("e2e", "uvloop", AT, "handrolled", "raw"), 1.5)
            for key in ("p50_ms", "p99_ms"):
                ratio_target(f"end to end ack, uvloop, 16 in flight: {key[:3]} aiodisp / matcher",
                             ("e2e", "uvloop", 16, "aiodisp", "ack"),
                             ("e2e", "uvloop", 16, "handrolled", "raw"), 1.3, key, higher=False)
        coap = "con" if framing == "ack" else "non"
        for loop in ("asyncio", "uvloop"):
            me = ("e2e", loop, AT, "aiodisp", framing)
            ratio_target(f"end to end {framing}, {loop}: aiodisp / rpcudp", me,
                         ("e2e", loop, AT, "rpcudp", "rpc"), 2.0)
            ratio_target(f"end to end {framing}, {loop}: aiodisp / aiocoap {coap.upper()}", me,
                         ("e2e", loop, AT, "aiocoap", coap), 10.0)
    return out
