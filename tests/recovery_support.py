"""Shared pieces of the stuck-work sweeper tests: short bounds, a sweeper built on the test's
clients, and reads of what the sweeper leaves behind."""

from __future__ import annotations

import contextlib

from prometheus_client import CollectorRegistry
from transcription_support import OVERRIDES

from config import Settings
from gateway.background import background_loop
from gateway.wiring import publisher_for
from recovery.alerts import RecoveryMetrics
from recovery.sweeper import StuckSweeper
from storage.conversations import ConversationStore
from storage.redis_client import RedisClient
from storage.s3_client import S3Client
from storage.sweep_lease import SweepLease

#: Bounds of seconds: a chunk is stuck in ``uploaded`` after 1 + 2 x 1 = 3 s, a finished
#: conversation after 1 s; a sweep is due every 0.3 s.
RECOVERY_OVERRIDES = {
    **OVERRIDES, "STREAM_LEASE_S": "1", "TRANSCRIPTION_MAX_ATTEMPTS": "1",
    "TRANSCRIPTION_RETRY_WINDOW_S": "1", "UPLOAD_VERIFY_DELAYS_S": "0.1",
    "UPLOAD_VERIFY_ERROR_WINDOW_S": "0.5", "STUCK_AFTER_S": "1", "STUCK_SWEEP_INTERVAL_S": "0.3",
}


def make_sweeper(
    settings: Settings, redis: RedisClient, s3: S3Client, registry: CollectorRegistry | None = None,
    owner: str = "test",
) -> StuckSweeper:
    return StuckSweeper(
        store=ConversationStore(redis), s3=s3, publisher=publisher_for(redis, settings),
        lease=SweepLease(redis), settings=settings,
        metrics=RecoveryMetrics(registry or CollectorRegistry()), owner=owner,
    )


def sweeping(sweeper: StuckSweeper) -> contextlib.AbstractAsyncContextManager[None]:
    """The sweeper's loop runs in this process for the block (as in a ``worker`` process)."""
    return background_loop(sweeper.run_forever, name="test-stuck-sweeper")


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0
