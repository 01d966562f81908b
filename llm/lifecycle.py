"""Building the LLM layer for one process (the gateway's ``llm_ctx`` owns it).

One provider (one ``AsyncAnthropic``, or the offline provider without
``ANTHROPIC_API_KEY``) and one limiter per process, owned by the app.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import structlog
from prometheus_client import CollectorRegistry

from config import Settings
from llm.client import BoundedLlm, RetryPolicy
from llm.jobs import JobStore
from llm.metrics import LlmMetrics
from llm.providers import AnthropicProvider, OfflineProvider, Provider
from storage.permits import ClusterLimiter, LimiterConfig, LimiterKeys
from storage.redis_client import RedisClient

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class LlmService:
    """Everything the LLM routes and handlers need."""

    llm: BoundedLlm
    limiter: ClusterLimiter
    metrics: LlmMetrics
    jobs: JobStore
    settings: Settings


def make_provider(settings: Settings) -> Provider:
    if settings.anthropic_api_key:
        return AnthropicProvider.create(
            api_key=settings.anthropic_api_key.reveal(),
            model=settings.llm_model,
            base_url=settings.anthropic_base_url,
            timeout_s=settings.llm_attempt_timeout_s,
        )
    log.warning(
        "llm_offline_provider",
        detail="ANTHROPIC_API_KEY is not set: summaries are extractive and auto-select "
        "uses keyword overlap; outputs are labelled provider=offline",
    )
    return OfflineProvider()


def make_limiter(settings: Settings, redis: RedisClient, metrics: LlmMetrics, model: str) -> ClusterLimiter:
    return ClusterLimiter(
        redis,
        LimiterKeys.for_prefix(settings.redis_key_prefix),
        LimiterConfig(limit=settings.llm_max_concurrent_calls, lease_s=settings.llm_lease_s),
        metrics,
        model=model,
    )


@asynccontextmanager
async def open_llm(
    settings: Settings, redis: RedisClient, registry: CollectorRegistry
) -> AsyncIterator[LlmService]:
    """Create the provider, limiter and job store; close the provider on exit.

    The limiter's process liveness heartbeat runs while the service is open, so a killed
    process's permits are freed in seconds (``storage.permit_liveness``).
    """
    metrics = LlmMetrics(registry)
    provider = make_provider(settings)
    limiter = make_limiter(settings, redis, metrics, provider.model)
    llm = BoundedLlm(
        provider,
        limiter,
        metrics,
        RetryPolicy(
            deadline_s=settings.llm_call_deadline_s,
            attempt_timeout_s=settings.llm_attempt_timeout_s,
        ),
    )
    try:
        async with limiter:
            yield LlmService(
                llm=llm,
                limiter=limiter,
                metrics=metrics,
                jobs=JobStore(redis, key_prefix=settings.redis_key_prefix),
                settings=settings,
            )
    finally:
        await llm.close()
