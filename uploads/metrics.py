"""Counters of the background upload verification (the ``upload-confirmation`` group)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter


class VerificationMetrics:
    """``echo_upload_verifications_total{outcome}``: uploaded, deferred or failed."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.verifications = Counter(
            "echo_upload_verifications",
            "Background upload verification outcomes (uploaded, deferred, failed)",
            ["outcome"],
            registry=registry,
        )

    def record(self, outcome: str) -> None:
        self.verifications.labels(outcome).inc()
