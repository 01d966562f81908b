"""HTTP metrics and the ``/metrics`` exposition.

Each app has its own ``CollectorRegistry`` (stored under
``appkeys.METRICS_REGISTRY``): no process-global registry, so tests and the
``dev`` process never share counters by accident. Other parts (streams, LLM)
register their collectors into the same registry.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram

LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class HttpMetrics:
    """Request count and latency by route and status."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "echo_http_requests",
            "HTTP requests answered, by method, route and status",
            ["method", "route", "status"],
            registry=registry,
        )
        self.latency_s = Histogram(
            "echo_http_request_duration_seconds",
            "Time to answer an HTTP request, by method, route and status",
            ["method", "route", "status"],
            buckets=LATENCY_BUCKETS_S,
            registry=registry,
        )
        # ``labels()`` validates and looks the child up under a lock on every call; the
        # label sets are few (routes x methods x statuses), so the children are kept here.
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    def observe(self, method: str, route: str, status: int, duration_s: float) -> None:
        children = self._children.get((method, route, status))
        if children is None:
            labels = (method, route, str(status))
            children = (self.requests.labels(*labels), self.latency_s.labels(*labels))
            self._children[(method, route, status)] = children
        count, latency_s = children
        count.inc()
        latency_s.observe(duration_s)


def route_label(request: web.Request) -> str:
    """The route's pattern (``/api/x/{id}``), never the raw path, to bound label cardinality."""
    info = request.match_info
    route = getattr(info, "route", None)
    resource = getattr(route, "resource", None)
    if resource is None:
        return "unmatched"
    canonical = getattr(resource, "canonical", None)
    return str(canonical) if canonical else "unmatched"
