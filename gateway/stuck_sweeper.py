"""The stuck-work sweeper in an application: ``recovery_ctx`` builds it (the admin routes and
the loop share it), ``sweeper_loop_ctx`` runs its loop (every ``worker`` process and ``dev``;
the lease in Redis makes one run per interval across all of them)."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from gateway.appkeys import METRICS_REGISTRY, PUBLISHER, RECOVERY, REDIS, S3, SETTINGS
from gateway.background import background_loop
from recovery.alerts import RecoveryMetrics
from recovery.sweeper import StuckSweeper
from storage.conversations import ConversationStore
from storage.sweep_lease import SweepLease
from streams.runtime import default_consumer_name


async def recovery_ctx(app: web.Application) -> AsyncIterator[None]:
    """The process's :class:`StuckSweeper` under ``RECOVERY`` (after the Redis and S3 contexts);
    a second registration in the same app (``dev``: routes and workers) is a no-op."""
    if RECOVERY in app:
        yield
        return
    settings = app[SETTINGS]
    redis = app[REDIS]
    app[RECOVERY] = StuckSweeper(
        store=ConversationStore(redis, key_prefix=settings.redis_key_prefix), s3=app[S3],
        publisher=app[PUBLISHER], lease=SweepLease(redis, key_prefix=settings.redis_key_prefix),
        settings=settings, metrics=RecoveryMetrics(app[METRICS_REGISTRY]),
        owner=settings.consumer_name or default_consumer_name(),
    )
    yield


async def sweeper_loop_ctx(app: web.Application) -> AsyncIterator[None]:
    """Run the sweeper's loop until the app stops (after :func:`recovery_ctx`)."""
    async with background_loop(app[RECOVERY].run_forever, name="stuck-sweeper"):
        yield
