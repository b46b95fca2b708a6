"""Round-trip time estimation (RFC 6298) per peer, for adaptive retransmission.

Karn's rule holds: only an exchange sent once gives a *strong* sample. So
that the timeout still adapts while everything is being retransmitted (a path
that got slower than the timeout gives no strong sample at all), an exchange
answered after one or two retransmissions gives a *weak* one, measured from
its first send, as CoCoA does (draft-ietf-core-cocoa): the weak estimator
uses a variance factor of 1 instead of 4, and the timeout, once a weak sample
exists, is a blend: a strong sample moves it half way to its estimate, a weak
one a quarter of the way.
"""

from __future__ import annotations

from collections.abc import Hashable

__all__ = ["RttEstimator", "RttTable"]

# RFC 6298 gains.
_ALPHA = 0.125
_BETA = 0.25
# CoCoA: variance factors of the strong and weak estimators, and the weights of
# their estimates in the blended timeout.
_K_STRONG = 4
_K_WEAK = 1
_STRONG_WEIGHT = 0.5
_WEAK_WEIGHT = 0.25


class RttEstimator:
    """Smoothed RTT and variance of one path, and the retransmission timeout they give."""

    __slots__ = ("blend", "initial", "max_rto", "min_rto", "rto", "rttvar", "srtt",
                 "weak_rttvar", "weak_srtt")

    def __init__(self, initial: float, min_rto: float, max_rto: float) -> None:
        self.initial = initial
        self.min_rto = min_rto
        self.max_rto = max_rto
        self.srtt: float | None = None
        self.rttvar = 0.0
        self.weak_srtt: float | None = None
        self.weak_rttvar = 0.0
        #: the blended timeout, once a weak sample exists (None: the strong one alone)
        self.blend: float | None = None
        #: the retransmission timeout now (see :meth:`_timeout`), kept up to date by
        #: the samples: read once per call made, it is an attribute, not a property
        self.rto = initial

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
        blend = self.blend
        if blend is not None:
            self.blend = _STRONG_WEIGHT * self._strong() + (1 - _STRONG_WEIGHT) * blend
        self.rto = self._timeout()

    def weak_sample(self, rtt: float) -> None:
        """Fold in the round trip of an exchange answered after one or two
        retransmissions, measured from its first send (CoCoA's weak estimator)."""
        if rtt < 0:
            return
        srtt = self.weak_srtt
        if srtt is None:
            srtt = self.weak_srtt = rtt
            self.weak_rttvar = rtt / 2
        else:
            self.weak_rttvar = (1 - _BETA) * self.weak_rttvar + _BETA * abs(srtt - rtt)
            srtt = self.weak_srtt = (1 - _ALPHA) * srtt + _ALPHA * rtt
        weak = srtt + _K_WEAK * self.weak_rttvar
        blend = self.blend if self.blend is not None else self._strong()
        self.blend = _WEAK_WEIGHT * weak + (1 - _WEAK_WEIGHT) * blend
        self.rto = self._timeout()

    def _strong(self) -> float:
        srtt = self.srtt
        return self.initial if srtt is None else srtt + _K_STRONG * self.rttvar

    def _timeout(self) -> float:
        """The retransmission timeout, clamped: ``srtt + 4 * rttvar`` from strong
        samples alone, the blend once a weak sample exists."""
        blend = self.blend
        if blend is None:
            srtt = self.srtt
            if srtt is None:
                return self.initial
            rto = srtt + 4 * self.rttvar
        else:
            rto = blend
        return self.max_rto if rto > self.max_rto else max(rto, self.min_rto)


class RttTable:
    """One :class:`RttEstimator` per peer, for at most ``capacity`` peers (oldest forgotten)."""

    __slots__ = ("_initial", "_max_rto", "_min_rto", "capacity", "estimators")

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
        #: peer -> its estimator (the same dict for the table's life: owners may bind get)
        self.estimators: dict[Hashable, RttEstimator] = {}
        self.capacity = capacity

    def rto(self, peer: Hashable) -> float:
        est = self.estimators.get(peer)
        return self._initial if est is None else est.rto

    def sample(self, peer: Hashable, rtt: float) -> None:
        peers = self.estimators
        est = peers.get(peer)
        if est is None:
            if len(peers) >= self.capacity:
                del peers[next(iter(peers))]
            est = peers[peer] = RttEstimator(self._initial, self._min_rto, self._max_rto)
        est.sample(rtt)

    def weak_sample(self, peer: Hashable, rtt: float) -> None:
        """A weak sample (see :meth:`RttEstimator.weak_sample`) for ``peer``."""
        peers = self.estimators
        est = peers.get(peer)
        if est is None:
            if len(peers) >= self.capacity:
                del peers[next(iter(peers))]
            est = peers[peer] = RttEstimator(self._initial, self._min_rto, self._max_rto)
        est.weak_sample(rtt)

    def estimator(self, peer: Hashable) -> RttEstimator | None:
        return self.estimators.get(peer)

    def __len__(self) -> int:
        return len(self.estimators)
