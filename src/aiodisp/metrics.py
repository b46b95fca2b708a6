"""Prometheus metrics from dispatcher stats (the ``aiodisp[prometheus]`` extra).

A :class:`DispatcherCollector` reads ``dispatcher.stats`` on every scrape and
turns each counter into a Prometheus counter (``aiodisp_sent_total``, ...)
labelled with the dispatcher's name, plus the gauges ``aiodisp_pending``,
``aiodisp_queued`` and ``aiodisp_closed``; a :class:`~aiodisp._serve.Server`
given with a dispatcher adds the ``aiodisp_serve_*`` metrics. Nothing is
counted twice and nothing runs between scrapes. The full list is in
docs/metrics.md.

One collector serves any number of dispatchers (:meth:`DispatcherCollector.add`),
since a registry refuses two collectors that yield the same metric names.
Scraping from another thread (``prometheus_client.start_http_server``) is safe:
it reads plain integers.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

try:
    from prometheus_client import REGISTRY, CollectorRegistry
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
except ImportError as exc:  # pragma: no cover - exercised in a subprocess test
    raise ImportError(
        "aiodisp.metrics needs prometheus_client: pip install 'aiodisp[prometheus]'"
    ) from exc

from .stats import STAT_FIELDS

__all__ = ["STAT_HELP", "DispatcherCollector", "register"]

#: The help text of each counter, by :class:`aiodisp.Stats` field.
STAT_HELP: dict[str, str] = {
    "sent": "Datagrams handed to the transport (first sends, retries, ACKs, cached replies).",
    "received": "Datagrams read from the transport.",
    "requests": "request() calls that sent their first datagram.",
    "notifies": "notify() and notify_unreliable() calls that sent their first datagram.",
    "retransmissions": "Datagrams sent again by a retry policy.",
    "budget_denied": "Retransmissions the retry budget refused (not sent).",
    "replies_matched": "Requests completed by their reply.",
    "acks_received": "ACKs that completed a notify() or stopped a request's retransmission.",
    "acks_sent": "ACKs sent.",
    "timeouts": "Calls that ended in RequestTimeout.",
    "cancelled": "Calls cancelled by their caller while waiting.",
    "unreachable": "Calls failed at once by an ICMP port unreachable (PeerUnreachable).",
    "delivered": "Messages queued for recv_from.",
    "consumed": "Messages handed to recv_from.",
    "unknown_replies": "Dropped: replies whose key has no pending request.",
    "wrong_source": "Dropped: replies from another address than the request went to.",
    "unknown_acks": "Dropped: ACKs or REJECTs for no pending call, or from the wrong address.",
    "ignored": "Messages the adapter classified DROP.",
    "unaccepted": "Dropped: replies a request's accept= refused (the request kept waiting).",
    "rejected": "Calls failed at once by the peer's REJECT.",
    "header_errors": "Dropped: datagrams with a missing or malformed framing header.",
    "decode_errors": "Dropped: datagrams the adapter could not decode.",
    "empty": "Dropped: empty datagrams.",
    "oversize": "Dropped: datagrams larger than the transport's limit.",
    "duplicates": "Dropped: retransmitted copies of datagrams already delivered.",
    "replies_resent": "Cached replies sent again for a retransmitted request.",
    "queue_drops": "Dropped: messages that found the incoming queue full (not ACKed).",
    "discarded_on_close": "Queued messages discarded by close().",
    "transport_errors": "Errors the transport reported (ICMP errors, failed sends).",
    "bundles_sent": "Datagrams sent carrying several messages and ACKs (coalesce=True).",
    "bundles_received": "Bundles of several datagrams received.",
}

_SERVE_HELP: dict[str, str] = {
    "handled": "Messages handed to the serve() handler.",
    "replied": "Replies the handler returned and that were sent.",
    "errors": "Handler calls that raised an exception.",
    "send_errors": "Handler replies that could not be sent.",
    "cancelled": "Handlers cancelled because serving stopped.",
}


@dataclass(slots=True)
class _Target:
    dispatcher: Any
    server: Any


class DispatcherCollector:
    """A Prometheus collector of one or more dispatchers' stats, labelled ``dispatcher=name``.

    ``DispatcherCollector(d, name="client")`` watches ``d``; :meth:`add` and
    :meth:`remove` change the set later. ``server`` (an ``aiodisp._serve.Server``)
    adds its handler counters. A :class:`aiodisp.sync.SyncDispatcher` works too.
    ``namespace`` prefixes every metric name (default ``aiodisp``). Register the
    collector on a ``prometheus_client`` registry, or use :func:`register`.
    """

    def __init__(
        self,
        dispatcher: Any = None,
        name: str = "default",
        *,
        server: Any = None,
        namespace: str = "aiodisp",
    ) -> None:
        self._namespace = namespace
        self._lock = threading.Lock()
        self._targets: dict[str, _Target] = {}
        if dispatcher is not None:
            self.add(dispatcher, name, server=server)

    def add(self, dispatcher: Any, name: str, *, server: Any = None) -> None:
        """Watch ``dispatcher`` (and ``server``) under the label ``dispatcher=name``."""
        inner = getattr(dispatcher, "dispatcher", dispatcher)  # a SyncDispatcher's own
        with self._lock:
            if name in self._targets:
                raise ValueError(f"a dispatcher named {name!r} is already collected")
            self._targets[name] = _Target(inner, server)

    def remove(self, name: str) -> None:
        """Stop reporting the dispatcher named ``name`` (KeyError if there is none)."""
        with self._lock:
            del self._targets[name]

    @property
    def names(self) -> list[str]:
        with self._lock:
            return list(self._targets)

    def describe(self) -> Iterator[Metric]:
        """The metric families, without samples (lets a registry check names)."""
        return self._families(include_samples=False)

    def collect(self) -> Iterator[Metric]:
        """One sample per metric and dispatcher, read now."""
        return self._families(include_samples=True)

    def _families(self, *, include_samples: bool) -> Iterator[Metric]:
        ns = self._namespace
        with self._lock:
            targets = list(self._targets.items()) if include_samples else []
        labels = ["dispatcher"]
        snapshots = [(name, t.dispatcher.stats, t) for name, t in targets]

        for field in STAT_FIELDS:
            counter = CounterMetricFamily(
                f"{ns}_{field}", STAT_HELP.get(field, f"Dispatcher counter {field}."),
                labels=labels,
            )
            for name, stats, _ in snapshots:
                counter.add_metric([name], getattr(stats, field))
            yield counter

        gauges = {
            "pending": "Requests and notifies waiting for a reply or an ACK.",
            "queued": "Messages waiting in the incoming queue for recv_from.",
            "closed": "1 once the dispatcher is closed, else 0.",
        }
        for field, help_text in gauges.items():
            gauge = GaugeMetricFamily(f"{ns}_{field}", help_text, labels=labels)
            for name, _, t in snapshots:
                gauge.add_metric([name], float(getattr(t.dispatcher, field)))
            yield gauge

        servers = [(name, t.server.stats) for name, t in targets if t.server is not None]
        if not include_samples or servers:
            for field, help_text in _SERVE_HELP.items():
                counter = CounterMetricFamily(f"{ns}_serve_{field}", help_text, labels=labels)
                for name, sstats in servers:
                    counter.add_metric([name], getattr(sstats, field))
                yield counter
            gauge = GaugeMetricFamily(
                f"{ns}_serve_in_flight", "Handlers running now.", labels=labels
            )
            for name, sstats in servers:
                gauge.add_metric([name], float(sstats.in_flight))
            yield gauge


def register(
    dispatcher: Any,
    name: str = "default",
    *,
    server: Any = None,
    registry: CollectorRegistry | None = None,
    namespace: str = "aiodisp",
) -> DispatcherCollector:
    """Make a :class:`DispatcherCollector` for ``dispatcher`` and register it.

    ``registry`` defaults to ``prometheus_client.REGISTRY`` (what
    ``start_http_server`` serves). Unregister with ``registry.unregister(collector)``.
    """
    collector = DispatcherCollector(dispatcher, name, server=server, namespace=namespace)
    (registry if registry is not None else REGISTRY).register(collector)
    return collector
