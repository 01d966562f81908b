"""The settings of the streams runtime, independent of any application's settings."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class StreamsConfig:
    """What the streams runtime needs to know; the application builds it from its settings."""
    key_prefix: str = "echo"
    lease_s: float = 30.0
    max_deliveries: int = 5
    concurrency: int = 8
    #: Entries read ahead of the handlers (per XREADGROUP at most), held and renewed.
    prefetch: int = 100
    max_len: int = 1_000_000
    retention_max_age_s: float = 86400.0
    dead_consumer_idle_s: float = 3600.0
    consumer_name: str | None = None
    shutdown_grace_s: float = 10.0
