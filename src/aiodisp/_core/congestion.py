"""Congestion control per peer, counted in calls, with no I/O.

Every peer a dispatcher calls gets a :class:`Peer`: a *window*, the number of
calls (requests and notifies) that may be in flight to it at once. A call
past the window waits (the driver's :class:`~aiodisp._admission.PeerWindows`)
before its first send; retransmissions do not add to what is in flight, the
call already counts. The rules, NewReno's (RFC 9002 section 7) in calls:

* **Start small, grow while it is used.** The window starts at
  :data:`INITIAL_WINDOW` calls. Each call completed (its reply or ACK came)
  while the window was in use (as many calls in flight as it allows, or calls
  waiting for it) grows it: by one call below the slow-start threshold (slow
  start: doubling every round trip), by ``1/window`` above it (congestion
  avoidance: one call per round trip). A window the application does not
  fill does not grow, so an idle peer's window cannot be spent at once later.
* **The loss signal.** A request's round trip includes the server's work, and
  a busy server answers late, not never: a retransmission timer that fires is
  not a loss by itself. A call is taken as lost when its timer fires *and* a
  call sent after its last copy has been answered since (QUIC's rule, RFC
  9002 section 6.1, with the call's adaptive timeout as the time threshold):
  the peer answers, this one or its answer went missing. Such a loss halves
  the window (and sets the threshold), never below one call, at most once per
  round trip: a loss of a call last sent before the last cut does not cut
  again (the recovery period).
* **Probes.** A timer that fires while nothing sent later has been answered
  means the peer is behind (queueing, a slow handler), gone, or every recent
  datagram was lost: it is a *probe* timeout. One such call per peer is sent
  again, as the probe; the others wait for the next probe time (the peer's
  retransmission timeout, doubled for each probe in a row that went
  unanswered) and look again. A spurious timeout during a burst thus costs one
  datagram per timeout period, not one per call in flight.
* **Persistent congestion.** When a second probe is due and the peer has
  answered nothing since the first, the window falls to one call: a peer that
  keeps losing is probed one call at a time until it answers, then the window
  grows again by slow start up to half of what it was.

The RTT estimate that sizes the timers (:mod:`.rtt`) keeps Karn's rule (only
calls sent once give it a strong sample) and takes a weak sample from calls
answered after one or two retransmissions (CoCoA), so the timeout still follows
the path while everything is being retransmitted.

The :class:`Windows` table holds the peers. The endpoint reads and writes a
peer's ``in_flight``, ``sends``, ``answered``, ``heard`` and ``limit`` inline on its hot
paths (one call start, one completion) and calls the methods here on the slow
ones. ``Windows.throttled`` is the set of peers a new call must wait for: its
window is full, or other calls wait for it already (first come, first served).
"""

from __future__ import annotations

import sys
from collections.abc import Hashable
from typing import Any

from .budget import RetryAccount, RetryBudget

__all__ = [
    "INITIAL_WINDOW",
    "LOSS_REDUCTION",
    "MAX_WINDOW",
    "PERSISTENT_PROBES",
    "Peer",
    "Windows",
]

Address = Any

#: Calls a new peer may have in flight before any has completed (RFC 6928's ten).
INITIAL_WINDOW = 10
#: The factor a loss multiplies the window by (NewReno's one half).
LOSS_REDUCTION = 0.5
#: The largest window (a bound on a float that only the application's use grows).
MAX_WINDOW = 1 << 20
#: Probes in a row, with no answer between them, that make congestion persistent.
PERSISTENT_PROBES = 2
#: The longest probe back-off: the retransmission timeout times 2 ** this.
_MAX_PROBE_SHIFT = 6
#: A window that never closes (congestion control off).
_UNLIMITED = sys.maxsize
_NEVER = float("-inf")


class Peer:
    """The congestion state and the retry account of one peer (see the module docs)."""

    __slots__ = (
        "account",
        "addr",
        "answered",
        "created",
        "cwnd",
        "heard",
        "in_flight",
        "limit",
        "next_probe",
        "probe_at",
        "probes",
        "recovery_start",
        "sends",
        "ssthresh",
        "waiting",
    )

    def __init__(self, addr: Address, now: float, window: int) -> None:
        self.addr = addr
        #: the window as a float (congestion avoidance adds fractions of a call)
        self.cwnd = float(window)
        #: the calls that may be in flight: ``int(cwnd)``, at least one
        self.limit = window
        self.ssthresh = float("inf")
        self.in_flight = 0
        #: calls waiting for the window (a woken one counts until it starts)
        self.waiting = 0
        #: first sends so far (the retry budget's deposits)
        self.sends = 0
        self.created = now
        #: the latest first-send time of the calls answered (see answered_again
        #: for a call sent more than once)
        self.answered = _NEVER
        #: when the peer last answered a call
        self.heard = _NEVER
        #: losses of calls last sent before this do not cut the window again
        self.recovery_start = _NEVER
        #: no probe before this time
        self.next_probe = _NEVER
        #: when the last probe went out
        self.probe_at = _NEVER
        #: probes in a row with no answer between them
        self.probes = 0
        self.account: RetryAccount | None = None

    def __repr__(self) -> str:
        return (f"<Peer {self.addr!r} window {self.limit} ({self.cwnd:.2f}), "
                f"{self.in_flight} in flight, {self.waiting} waiting>")


class Windows:
    """The peers' windows: :class:`Peer` per address, for at most ``capacity`` peers.

    ``enabled=False`` (``Dispatcher(congestion=False)``) keeps the table, for
    the retry budget, with windows that never close and timers that always
    retransmit. Peers with nothing in flight and nothing waiting are forgotten,
    oldest first, when the table is full.
    """

    __slots__ = ("_initial", "capacity", "enabled", "peers", "throttled")

    def __init__(
        self, *, enabled: bool = True, initial: int = INITIAL_WINDOW, capacity: int = 4096
    ) -> None:
        if initial < 1:
            raise ValueError("the initial window must be at least one call")
        self.enabled = enabled
        self._initial = initial if enabled else _UNLIMITED
        self.capacity = capacity
        self.peers: dict[Hashable, Peer] = {}
        #: peers a new call must wait for (their window is full or calls wait for it)
        self.throttled: set[Hashable] = set()

    def peer(self, addr: Address, now: float) -> Peer:
        """The peer at ``addr``, made on first use (at most ``capacity`` kept)."""
        peers = self.peers
        peer = peers.get(addr)
        if peer is None:
            if len(peers) >= self.capacity:
                self._forget_idle()
            peer = peers[addr] = Peer(addr, now, self._initial)
        return peer

    def _forget_idle(self) -> None:
        peers = self.peers
        idle = [addr for addr, peer in peers.items() if not peer.in_flight and not peer.waiting]
        for addr in idle[: max(1, self.capacity // 8)]:
            del peers[addr]

    def window(self, addr: Address) -> int | None:
        """The calls ``addr`` may have in flight now (None: congestion control is off)."""
        if not self.enabled:
            return None
        peer = self.peers.get(addr)
        return self._initial if peer is None else peer.limit

    def room(self, addr: Address) -> int:
        """Calls that may start to ``addr`` now (its window less what is in flight)."""
        peer = self.peers.get(addr)
        if peer is None:
            return self._initial
        return peer.limit - peer.in_flight

    # ------------------------------------------------------------------ the window

    def started(self, peer: Peer) -> None:
        """A call to ``peer`` is sent for the first time.

        (The endpoint's hot path inlines this: tests/core/test_congestion.py pins
        the copy to it.)
        """
        peer.sends += 1
        peer.in_flight += 1
        if peer.in_flight >= peer.limit:
            self.throttled.add(peer.addr)

    def answered_call(self, peer: Peer, sent_at: float, now: float) -> None:
        """A call to ``peer`` first sent at ``sent_at`` (and only then) was answered at ``now``.

        (The endpoint's hot path inlines this, calling :meth:`grow` only when
        the window was in use.)
        """
        n = peer.in_flight
        peer.in_flight = n - 1
        peer.heard = now
        if sent_at > peer.answered:
            peer.answered = sent_at
        if n >= peer.limit or peer.waiting:
            self.grow(peer, sent_at)

    def grow(self, peer: Peer, sent_at: float) -> None:
        """A call sent at ``sent_at`` was answered while the window was in use: grow it.

        (Its call is out of ``in_flight`` already.) A call sent before the last
        cut grows nothing.
        """
        if sent_at >= peer.recovery_start:
            cwnd = peer.cwnd
            cwnd += 1.0 if cwnd < peer.ssthresh else 1.0 / cwnd
            if cwnd > MAX_WINDOW:
                cwnd = MAX_WINDOW
            peer.cwnd = cwnd
            peer.limit = int(cwnd)
        self._update(peer)

    def retransmission_answered(
        self, peer: Peer, sent_at: float, last_sent: float, now: float
    ) -> None:
        """A call first sent at ``sent_at`` and again until ``last_sent`` was answered.

        It grows nothing (it was lost or late once: Karn's ambiguity).
        """
        peer.in_flight -= 1
        self.answered_again(peer, sent_at, last_sent, now)

    def answered_again(self, peer: Peer, sent_at: float, last_sent: float, now: float) -> None:
        """:meth:`retransmission_answered` for a call out of ``in_flight`` already.

        Which copy was answered is unknown. The last is taken only if the peer
        had stopped answering (congestion had become persistent: probes went
        unanswered) and answered nothing else since that copy went: a probe woke
        it, and the calls sent before the probe are then seen as lost. Else the
        first: a busy peer answering its queue in order answers the first copy,
        and a busy caller may read its answers late (nothing "heard" for a
        while only means nothing was read); taking the last would show every
        call queued behind it as lost.
        """
        persistent = peer.probes >= PERSISTENT_PROBES and peer.heard < last_sent
        answered = last_sent if persistent else sent_at
        if answered > peer.answered:
            peer.answered = answered
        peer.heard = now
        self._update(peer)

    def ended(self, peer: Peer) -> None:
        """A call to ``peer`` ended unanswered and is no loss signal (cancelled, failed)."""
        peer.in_flight -= 1
        self._update(peer)

    def expired(self, peer: Peer, last_sent: float, now: float) -> None:
        """A call to ``peer`` last sent at ``last_sent`` timed out unanswered.

        :meth:`ended`, then :meth:`timed_out`.
        """
        peer.in_flight -= 1
        self.timed_out(peer, last_sent, now)

    def timed_out(self, peer: Peer, last_sent: float, now: float) -> None:
        """What a call that timed out says (it is out of ``in_flight`` already).

        A loss if a call sent after it was answered; else it counts as a probe
        that went unanswered (two in a row: persistent congestion).
        """
        if self.enabled:
            if peer.answered > last_sent:
                if last_sent >= peer.recovery_start:
                    self._cut(peer, now, peer.cwnd * LOSS_REDUCTION)
            else:
                self._probed(peer, now)
        self._update(peer)

    def _update(self, peer: Peer) -> None:
        if peer.in_flight >= peer.limit or peer.waiting:
            self.throttled.add(peer.addr)
        else:
            self.throttled.discard(peer.addr)

    def wait_begins(self, addr: Address, now: float) -> None:
        """A call to ``addr`` waits for its window."""
        peer = self.peer(addr, now)
        peer.waiting += 1
        self.throttled.add(addr)

    def wait_ends(self, addr: Address) -> None:
        """A call stopped waiting for its window (it starts now, or it left)."""
        peer = self.peers.get(addr)
        if peer is not None:
            peer.waiting -= 1
            self._update(peer)

    # ------------------------------------------------------------------ timers

    def on_timer(self, peer: Peer, last_sent: float, now: float, rto: float) -> float | None:
        """A call to ``peer`` last sent at ``last_sent`` is due: may it be sent again now?

        Returns None (yes: it was lost, or it is the peer's probe) or the time
        to look again (another call probes the peer now). ``rto`` is the peer's
        retransmission timeout, which spaces the probes.
        """
        if not self.enabled:
            return None
        if peer.answered > last_sent:
            # A call sent after this one was answered: this one was lost.
            if last_sent >= peer.recovery_start:
                self._cut(peer, now, peer.cwnd * LOSS_REDUCTION)
            return None
        if now < peer.next_probe:
            return peer.next_probe
        self._probed(peer, now)
        peer.next_probe = now + rto * (1 << min(peer.probes - 1, _MAX_PROBE_SHIFT))
        return None

    def _probed(self, peer: Peer, now: float) -> None:
        """A probe goes out (or a call timed out with nothing later answered)."""
        if peer.probes and peer.heard < peer.probe_at:
            # nothing answered since the last probe
            peer.probes += 1
            if peer.probes >= PERSISTENT_PROBES and peer.cwnd > 1.0:
                self._cut(peer, now, 1.0)
        else:
            peer.probes = 1
        peer.probe_at = now

    def _cut(self, peer: Peer, now: float, cwnd: float) -> None:
        peer.ssthresh = max(peer.cwnd * LOSS_REDUCTION, 1.0)
        peer.cwnd = max(cwnd, 1.0)
        peer.limit = int(peer.cwnd)
        peer.recovery_start = now
        self._update(peer)

    # ------------------------------------------------------------------ the budget

    def may_retransmit(self, peer: Peer, budget: RetryBudget, now: float) -> bool:
        """Whether the retry budget lets one more retransmission go to ``peer`` now."""
        account = peer.account
        if account is None:
            account = peer.account = RetryAccount(peer.created)
        return account.withdraw(budget, peer.sends, now)
