"""Round-trip time estimation (RFC 6298) per peer, for adaptive retransmission."""

from __future__ import annotations

from collections.abc import Hashable

__all__ = ["RttEstimator", "RttTable"]

# RFC 6298 gains.
_ALPHA = 0.125
_BETA = 0.25


class RttEstimator:
    """Smoothed RTT and variance of one path, and the retransmission timeout they give."""

    __slots__ = ("initial", "max_rto", "min_rto", "rttvar", "srtt")

    def __init__(self, initial: float, min_rto: float, max_rto: float) -> None:
        self.initial = initial
        self.min_rto = min_rto
        self.max_rto = max_rto
        self.srtt: float | None = None
        self.rttvar = 0.0

    def sample(self, rtt: float) -> None:
        """Fold in one measured round trip (only from exchanges sent once: Karn's rule)."""
        if rtt < 0:
            return
        srtt = self.srtt
        if srtt is None:
            self.srtt = rtt
            self.rttvar = rtt / 2
        else:
            self.rttvar = (1 - _BETA) * self.rttvar + _BETA * abs(srtt - rtt)
            self.srtt = (1 - _ALPHA) * srtt + _ALPHA * rtt

    @property
    def rto(self) -> float:
        """The retransmission timeout: ``srtt + 4 * rttvar``, clamped."""
        srtt = self.srtt
        if srtt is None:
            return self.initial
        rto = srtt + 4 * self.rttvar
        return self.max_rto if rto > self.max_rto else max(rto, self.min_rto)


class RttTable:
    """One :class:`RttEstimator` per peer, for at most ``capacity`` peers (oldest forgotten)."""

    __slots__ = ("_initial", "_max_rto", "_min_rto", "_peers", "capacity")

    def __init__(
        self,
        *,
        initial: float = 0.25,
        min_rto: float = 0.05,
        max_rto: float = 5.0,
        capacity: int = 1024,
    ) -> None:
        self._initial = initial
        self._min_rto = min_rto
        self._max_rto = max_rto
        self._peers: dict[Hashable, RttEstimator] = {}
        self.capacity = capacity

    def rto(self, peer: Hashable) -> float:
        est = self._peers.get(peer)
        return self._initial if est is None else est.rto

    def sample(self, peer: Hashable, rtt: float) -> None:
        peers = self._peers
        est = peers.get(peer)
        if est is None:
            if len(peers) >= self.capacity:
                del peers[next(iter(peers))]
            est = peers[peer] = RttEstimator(self._initial, self._min_rto, self._max_rto)
        est.sample(rtt)

    def estimator(self, peer: Hashable) -> RttEstimator | None:
        return self._peers.get(peer)

    def __len__(self) -> int:
        return len(self._peers)
