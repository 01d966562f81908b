"""How the application's settings configure the reusable cores it composes."""

from __future__ import annotations

from config import Settings
from storage.redis_autopipeline import AutoPipeline
from storage.redis_client import RedisClient
from streams.config import StreamsConfig
from streams.publisher import Publisher


def streams_config(settings: Settings) -> StreamsConfig:
    """The streams runtime's own config, from ``REDIS_KEY_PREFIX`` and the ``STREAM_*``,
    ``CONSUMER_NAME`` and ``SHUTDOWN_GRACE_S`` settings."""
    return StreamsConfig(
        key_prefix=settings.redis_key_prefix,
        lease_s=settings.stream_lease_s,
        max_deliveries=settings.stream_max_deliveries,
        concurrency=settings.stream_concurrency,
        prefetch=settings.stream_prefetch,
        max_len=settings.stream_max_len,
        retention_max_age_s=settings.stream_retention_max_age_s,
        dead_consumer_idle_s=settings.stream_dead_consumer_idle_s,
        consumer_name=settings.consumer_name,
        shutdown_grace_s=settings.shutdown_grace_s,
    )


def publisher_for(
    redis: RedisClient, settings: Settings, *, autopipeline: AutoPipeline | None = None
) -> Publisher:
    """A publisher on ``redis`` with the streams settings; its single publishes go over
    ``autopipeline`` when given (concurrent requests' XADDs share one write)."""
    execute = autopipeline.execute if autopipeline is not None else None
    return Publisher.from_config(redis, streams_config(settings), execute=execute)
