"""What the sweeper tells operators about each stuck item: a warning log line, metrics, and a
Sentry event when sentry-sdk is initialized (``SENTRY_DSN``; the ``sentry`` extra)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge

log = structlog.get_logger(__name__)


@dataclass(slots=True)
class StuckItem:
    """A conversation or chunk found stuck, and what was done about it."""

    kind: Literal["conversation", "chunk"]
    conversation_id: str
    chunk_id: str | None
    status: str
    age_s: float
    bound_s: float
    #: What was done, in order (empty for a dry run or when nothing could be).
    actions: list[str]

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["age_s"] = round(self.age_s, 3)
        out["bound_s"] = round(self.bound_s, 3)
        return out


class RecoveryMetrics:
    """The sweeper's metrics, on the app's registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.stuck_conversations = Counter(
            "echo_stuck_conversations_found", "conversations found stuck by the sweeper",
            registry=registry,
        )
        self.stuck_chunks = Counter(
            "echo_stuck_chunks_found", "chunks found stuck by the sweeper", registry=registry
        )
        self.recovered = Counter(
            "echo_recovered", "recovery actions taken (sweeper and manual)", ["action"],
            registry=registry,
        )
        self.last_success = Gauge(
            "echo_sweeper_last_success_timestamp_seconds",
            "when the last sweep finished, in any process (Redis time)", registry=registry,
        )
        self.examined = Counter(
            "echo_sweeper_examined_conversations", "conversations the sweeps of this process "
            "examined (the cost of a run)", registry=registry,
        )
        self.last_duration = Gauge(
            "echo_sweeper_last_run_duration_seconds", "how long this process's last sweep took",
            registry=registry,
        )
        self.runs = Counter(
            "echo_sweeper_runs", "sweeps this process ran, by outcome", ["outcome"],
            registry=registry,
        )


def report_stuck(item: StuckItem, metrics: RecoveryMetrics | None) -> None:
    """Log, count and (if Sentry is on) send one stuck item, with what was done."""
    log.warning(
        "stuck_work_found", kind=item.kind, conversation_id=item.conversation_id,
        chunk_id=item.chunk_id, status=item.status, age_s=round(item.age_s, 1),
        bound_s=round(item.bound_s, 1), actions=item.actions,
    )
    if metrics is not None:
        (metrics.stuck_chunks if item.kind == "chunk" else metrics.stuck_conversations).inc()
    _send_to_sentry(item)


def count_action(metrics: RecoveryMetrics | None, action: str) -> None:
    if metrics is not None:
        metrics.recovered.labels(action).inc()


def _send_to_sentry(item: StuckItem) -> None:
    try:
        import sentry_sdk
    except ImportError:
        return
    if not sentry_sdk.is_initialized():
        return
    with sentry_sdk.new_scope() as scope:
        scope.set_tag("stuck_kind", item.kind)
        scope.set_tag("conversation_id", item.conversation_id)
        if item.chunk_id:
            scope.set_tag("chunk_id", item.chunk_id)
        scope.set_context("stuck", item.as_dict())
        scope.fingerprint = ["stuck-work", item.kind, item.status]
        sentry_sdk.capture_message(
            f"stuck {item.kind} {item.chunk_id or item.conversation_id} ({item.status}): "
            f"{', '.join(item.actions) or 'no action'}",
            level="warning",
        )
