"""Prometheus metrics of transcription and finalization, in the registry the app gives us.

The ``permit*`` attributes carry the names :class:`storage.permits.ClusterLimiter` (its :class:`~storage.permits.PermitMetrics`)
updates, so the same limiter class bounds transcription calls with metrics of
their own (``transcription_permit_*``) beside the LLM ones in one registry.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_WAIT_BUCKETS_S = (0.005, 0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
_CALL_BUCKETS_S = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120, 300)


class TranscriptionMetrics:
    """Every metric of this package, created once per registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        # --- the limiter's (same attribute names as llm.metrics.LlmMetrics)
        self.queue_depth_cluster = Gauge(
            "echo_transcription_permit_waiters_cluster",
            "Transcription calls waiting for a permit across the cluster (last seen here)",
            registry=registry,
        )
        self.queue_depth_process = Gauge(
            "echo_transcription_permit_waiters_process",
            "Transcription calls of this process waiting for a permit", registry=registry,
        )
        self.permits_in_use = Gauge(
            "echo_transcription_permits_in_use",
            "Transcription permits held across the cluster (last seen here)", registry=registry,
        )
        self.permits_held_process = Gauge(
            "echo_transcription_permits_held_process", "Transcription permits held by this process",
            registry=registry,
        )
        self.wait_seconds = Histogram(
            "echo_transcription_permit_wait_seconds", "Time a call waited for its permit", ["model"],
            buckets=_WAIT_BUCKETS_S, registry=registry,
        )
        self.leases_lost = Counter(
            "echo_transcription_leases_lost_total", "Permits whose lease expired during the call",
            registry=registry,
        )
        self.leases_reclaimed = Counter(
            "echo_transcription_leases_reclaimed_total",
            "Expired permits of other (crashed) holders this process freed", registry=registry,
        )
        self.redis_errors = Counter(
            "echo_transcription_limiter_redis_errors_total",
            "Limiter operations that failed because Redis could not be reached",
            registry=registry,
        )
        # --- ours
        self.call_seconds = Histogram(
            "echo_transcription_call_seconds", "One provider call, by provider and outcome",
            ["provider", "outcome"], buckets=_CALL_BUCKETS_S, registry=registry,
        )
        self.retries = Counter(
            "echo_transcription_http_retries_total", "Provider requests retried, by status",
            ["status"], registry=registry,
        )
        self.chunks = Counter(
            "echo_transcription_chunks_total", "Chunks handled, by outcome (transcribed, failed, "
            "retried)", ["outcome"], registry=registry,
        )
        self.audio_seconds = Counter(
            "echo_transcription_audio_seconds_total", "Seconds of audio transcribed", registry=registry,
        )
        self.finalizations = Counter(
            "echo_transcription_finalizations_total",
            "Finalize events by outcome (finalized, already, busy, not_ready, stale)",
            ["outcome"], registry=registry,
        )
