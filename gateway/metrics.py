"""HTTP metrics and the ``/metrics`` exposition.

Each app has its own ``CollectorRegistry`` (stored under
``appkeys.METRICS_REGISTRY``): no process-global registry, so tests and the
``dev`` process never share counters by accident. Other parts (streams, LLM)
register their collectors into the same registry.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Iterator
from itertools import accumulate
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class HttpMetrics(Collector):
    """Request count and latency by route and status: ``echo_http_requests_total`` and
    ``echo_http_request_duration_seconds``, registered in ``registry``.

    Kept in plain counters rather than ``prometheus_client`` metric objects, whose
    every ``inc``/``observe`` takes a lock and looks the labelled child up: this runs
    on every request. :meth:`observe` is called only from the event loop's thread,
    and the exposition (``collect``) runs in that thread too, so no lock is needed.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        #: (method, route, status) -> [count, sum of seconds, per-bucket counts (+Inf last)]
        self._series: dict[tuple[str, str, int], list[Any]] = {}
        registry.register(self)

    def observe(self, method: str, route: str, status: int, duration_s: float) -> None:
        series = self._series.get((method, route, status))
        if series is None:
            series = self._series[(method, route, status)] = [
                0, 0.0, [0] * (len(LATENCY_BUCKETS_S) + 1)
            ]
        series[0] += 1
        series[1] += duration_s
        series[2][bisect_left(LATENCY_BUCKETS_S, duration_s)] += 1

    def collect(self) -> Iterator[Metric]:
        labels = ["method", "route", "status"]
        requests = CounterMetricFamily(
            "echo_http_requests", "HTTP requests answered, by method, route and status", labels=labels
        )
        latency = HistogramMetricFamily(
            "echo_http_request_duration_seconds",
            "Time to answer an HTTP request, by method, route and status", labels=labels,
        )
        bounds = [floatToGoString(b) for b in (*LATENCY_BUCKETS_S, math.inf)]  # type: ignore[no-untyped-call]
        for (method, route, status), (count, total_s, per_bucket) in list(self._series.items()):
            values = [method, route, str(status)]
            requests.add_metric(values, count)
            latency.add_metric(values, list(zip(bounds, accumulate(per_bucket))), total_s)
        yield requests
        yield latency


def route_label(request: web.Request) -> str:
    """The route's pattern (``/api/x/{id}``), never the raw path, to bound label cardinality."""
    info = request.match_info
    route = getattr(info, "route", None)
    resource = getattr(route, "resource", None)
    if resource is None:
        return "unmatched"
    canonical = getattr(resource, "canonical", None)
    return str(canonical) if canonical else "unmatched"
