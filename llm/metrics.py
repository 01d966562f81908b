"""Prometheus metrics of the LLM layer, registered into the registry the app gives us."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_WAIT_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_CALL_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120)


class LlmMetrics:
    """Every LLM metric, created once per registry (one per app)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.queue_depth_cluster = Gauge(
            "echo_llm_permit_waiters_cluster",
            "Calls waiting for a model-call permit across the cluster (last seen by this process)",
            registry=registry,
        )
        self.queue_depth_process = Gauge(
            "echo_llm_permit_waiters_process",
            "Calls of this process waiting for a model-call permit",
            registry=registry,
        )
        self.permits_in_use = Gauge(
            "echo_llm_permits_in_use",
            "Model-call permits held across the cluster (last seen by this process)",
            registry=registry,
        )
        self.permits_held_process = Gauge(
            "echo_llm_permits_held_process", "Model-call permits held by this process", registry=registry
        )
        self.wait_seconds = Histogram(
            "echo_llm_permit_wait_seconds",
            "Time a call waited for its permit (pause included)",
            ["model"],
            buckets=_WAIT_BUCKETS_S,
            registry=registry,
        )
        self.call_seconds = Histogram(
            "echo_llm_call_seconds",
            "Latency of one provider attempt, by outcome (ok, rate_limited, overloaded, "
            "server_error, timeout, connection_error, client_error, lease_lost)",
            ["model", "outcome"],
            buckets=_CALL_BUCKETS_S,
            registry=registry,
        )
        self.retries = Counter(
            "echo_llm_retries_total", "Attempts retried, by reason", ["model", "reason"], registry=registry
        )
        self.rate_limited = Counter(
            "echo_llm_rate_limited_total", "429 answers from the provider", ["model"], registry=registry
        )
        self.overloaded = Counter(
            "echo_llm_overloaded_total", "529 answers from the provider", ["model"], registry=registry
        )
        self.pause_seconds = Counter(
            "echo_llm_pause_seconds_total",
            "Seconds of cluster-wide pause this process set after a 429 or 529",
            registry=registry,
        )
        self.tokens = Counter(
            "echo_llm_tokens_total", "Tokens used, by direction (input, output)", ["model", "direction"],
            registry=registry,
        )
        self.leases_lost = Counter(
            "echo_llm_leases_lost_total",
            "Permits whose lease expired while their call ran (the call was abandoned)",
            registry=registry,
        )
        self.leases_reclaimed = Counter(
            "echo_llm_leases_reclaimed_total",
            "Expired leases of other holders (crashed or stalled processes) this process freed",
            registry=registry,
        )
        self.redis_errors = Counter(
            "echo_llm_limiter_redis_errors_total",
            "Limiter operations that failed because Redis could not be reached",
            registry=registry,
        )
