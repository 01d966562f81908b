"""Prometheus metrics of streams and consumer groups, registered in the caller's registry."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

if TYPE_CHECKING:
    from streams.backlog import BacklogRow

HANDLER_BUCKETS_S = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0)
DELIVERY_BUCKETS = (1, 2, 3, 4, 5, 7, 10, 20)


class StreamMetrics:
    """Counters and histograms the runtime updates, gauges refreshed from ``backlog_rows``."""

    def __init__(self, registry: CollectorRegistry) -> None:
        labels = ["stream", "group"]

        def counter(name: str, doc: str) -> Counter:
            return Counter(f"echo_stream_{name}", doc, labels, registry=registry)

        def gauge(name: str, doc: str) -> Gauge:
            return Gauge(f"echo_stream_{name}", doc, labels, registry=registry)

        self.processed = counter("processed", "Entries handled and acked")
        self.failed = counter("failed", "Handler failures (each failed delivery)")
        self.retried = counter("retried", "Entries redelivered after a failure")
        self.reclaimed = counter("reclaimed", "Entries claimed from consumers idle past the lease")
        self.dead_lettered = counter("dead_lettered", "Entries moved to the dead letters")
        self.deferred = counter("deferred", "Entries deferred by their handler")
        self.handler_s = Histogram(
            "echo_stream_handler_duration_seconds", "Handler run time", labels,
            buckets=HANDLER_BUCKETS_S, registry=registry,
        )
        self.deliveries = Histogram(
            "echo_stream_delivery_count", "Delivery count of entries when handled", labels,
            buckets=DELIVERY_BUCKETS, registry=registry,
        )
        self.length = gauge("length", "Entries in the stream")
        self.lag = gauge("lag", "Entries not yet delivered to the group")
        self.pending = gauge("pending", "Entries delivered but not acked")
        self.oldest_pending_age_s = gauge(
            "oldest_pending_age_seconds", "Age of the oldest pending entry"
        )
        self.consumers = gauge("consumers", "Consumers in the group")
        self.dead_letters = gauge("dead_letters", "Entries in the stream's dead letters")
        self.delayed = gauge("delayed", "Deferred entries waiting for their due time")

    def refresh(self, rows: Iterable[BacklogRow]) -> None:
        for row in rows:
            key = (row.stream, row.group)
            self.length.labels(*key).set(row.length)
            self.lag.labels(*key).set(row.lag if row.lag is not None else -1)
            self.pending.labels(*key).set(row.pending)
            self.oldest_pending_age_s.labels(*key).set(row.oldest_pending_age_s)
            self.consumers.labels(*key).set(row.consumers)
            self.dead_letters.labels(*key).set(row.dead_letters)
            self.delayed.labels(*key).set(row.delayed)


class BurstMetrics:
    """The per-entry metrics of one group in this process, counted in plain fields on the
    hot path and added to the Prometheus children by :meth:`flush`, once per burst (each
    ``inc``/``observe`` takes a lock; ``labels()`` a lookup too)."""

    def __init__(self, metrics: StreamMetrics, labels: tuple[str, str]) -> None:
        self.processed = metrics.processed.labels(*labels)
        self.handler_s = metrics.handler_s.labels(*labels)
        self.deliveries = metrics.deliveries.labels(*labels)
        self.n_processed = 0
        self.n_first_deliveries = 0
        self.handler_durations_s: list[float] = []

    def flush(self) -> None:
        if self.handler_durations_s:
            durations_s, self.handler_durations_s = self.handler_durations_s, []
            observe_all(self.handler_s, durations_s)
        if self.n_processed:
            self.processed.inc(self.n_processed)
            self.n_processed = 0
        if self.n_first_deliveries:
            observe_many(self.deliveries, 1, self.n_first_deliveries)
            self.n_first_deliveries = 0


def observe_many(histogram: Histogram, value: float, n: int) -> None:
    """``n`` observations of one ``value`` at once, at the cost of one (a labelled child).

    prometheus-client has no bulk observe; this does what ``Histogram.observe`` does
    (sum, then the first bucket whose bound holds the value) with ``n``, and falls back to
    ``n`` observes should the client's internals change.
    """
    total = getattr(histogram, "_sum", None)
    bounds = getattr(histogram, "_upper_bounds", None)
    buckets = getattr(histogram, "_buckets", None)
    if total is None or bounds is None or buckets is None:
        for _ in range(n):
            histogram.observe(value)
        return
    total.inc(value * n)
    for i, bound in enumerate(bounds):
        if value <= bound:
            buckets[i].inc(n)
            break


def observe_all(histogram: Histogram, values: Sequence[float]) -> None:
    """Observe each of ``values`` (a labelled child), at the cost of one observation per
    bucket they fall in, not per value: the sum once, then each bucket's count once.

    Like :func:`observe_many`, it does what ``Histogram.observe`` does and falls back to
    one observe per value should the client's internals change.
    """
    total = getattr(histogram, "_sum", None)
    bounds = getattr(histogram, "_upper_bounds", None)
    buckets = getattr(histogram, "_buckets", None)
    if total is None or bounds is None or buckets is None:
        for value in values:
            histogram.observe(value)
        return
    counts = [0] * len(bounds)
    for value in values:
        # The first bucket whose bound holds the value (the last bound is +Inf).
        counts[bisect_left(bounds, value)] += 1
    total.inc(sum(values))
    for bucket, count in zip(buckets, counts):
        if count:
            bucket.inc(count)
