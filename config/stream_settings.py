"""The streams section: consumer name, leases, bounds, retention and the shutdown grace."""

from __future__ import annotations

from dataclasses import dataclass

from config.parsing import (
    float_above,
    int_at_least,
    parse_opt_str,
    setting,
)
from config.section import SettingsSection


@dataclass(frozen=True, repr=False)
class StreamSettings(SettingsSection):
    """Consumers and streams: names, leases, bounds, retention, shutdown."""

    consumer_name: str | None = setting(
        "CONSUMER_NAME", parse_opt_str, None, "consumer name in every group (default host-pid)"
    )
    shutdown_grace_s: float = setting(
        "SHUTDOWN_GRACE_S", float_above(0), 10.0, "time in-flight work gets to finish on SIGTERM"
    )
    stream_lease_s: float = setting(
        "STREAM_LEASE_S", float_above(0), 30.0,
        "how long a consumer owns an entry without renewing; a dead worker's entries move after it",
    )
    stream_max_deliveries: int = setting(
        "STREAM_MAX_DELIVERIES", int_at_least(1), 5,
        "started attempts of an upload check (and of any group that sets none) before the "
        "entry ends or moves to the dead letters",
    )
    stream_concurrency: int = setting(
        "STREAM_CONCURRENCY", int_at_least(1), 8,
        "handler loops per consumer group and process (entries in flight)",
    )
    stream_prefetch: int = setting(
        "STREAM_PREFETCH", int_at_least(1), 100,
        "entries read ahead per group and process beyond the running ones (leased, renewed)",
    )
    stream_max_len: int = setting(
        "STREAM_MAX_LEN", int_at_least(1000), 1_000_000,
        "safety cap on a stream's length (retention normally trims far below it)",
    )
    stream_retention_max_age_s: float = setting(
        "STREAM_RETENTION_MAX_AGE_S", float_above(0), 86400.0,
        "acknowledged entries older than this are trimmed; unacknowledged ones never",
    )
    stream_dead_consumer_idle_s: float = setting(
        "STREAM_DEAD_CONSUMER_IDLE_S", float_above(0), 3600.0,
        "a consumer idle this long with nothing pending is removed from its group",
    )
