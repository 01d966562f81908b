"""The bound on transcription provider calls: per process and across the cluster.

Per process an ``asyncio.Semaphore``; across the cluster the Redis-backed
:class:`storage.permits.ClusterLimiter` (the one that bounds LLM calls) under
keys of its own (``<prefix>:{transcription}:permits:*``), so a crashed
worker's permit is freed within the limiter's liveness (seconds; after its lease
if the bound was never opened) and a 429 pauses every process.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from types import TracebackType
from typing import Self

from storage.permits import ClusterLimiter, LimiterConfig, LimiterKeys
from storage.redis_client import RedisClient
from transcription.metrics import TranscriptionMetrics


def limiter_keys(prefix: str) -> LimiterKeys:
    return LimiterKeys.for_prefix(prefix, tag="transcription")


class CallBound:
    """``async with bound.slot():`` around one provider call."""

    def __init__(
        self, *, per_process: int, limiter: ClusterLimiter | None = None
    ) -> None:
        self._local = asyncio.Semaphore(per_process)
        self._limiter = limiter

    @classmethod
    def create(
        cls, redis: RedisClient, metrics: TranscriptionMetrics, *, prefix: str, per_process: int,
        cluster: int, lease_s: float, model: str,
    ) -> CallBound:
        limiter = ClusterLimiter(
            redis, limiter_keys(prefix), LimiterConfig(limit=cluster, lease_s=lease_s),
            metrics,
            model=model,
        )
        return cls(per_process=per_process, limiter=limiter)

    async def __aenter__(self) -> Self:
        """Start the cluster limiter's process liveness heartbeat: the owner
        (``open_transcription``) holds the bound open while the service runs."""
        if self._limiter is not None:
            await self._limiter.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._limiter is not None:
            await self._limiter.close()

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        async with self._local:
            if self._limiter is None:
                yield
                return
            async with self._limiter.permit():
                yield

    async def pause_for(self, delay_s: float) -> None:
        """Hold back every process's next call for ``delay_s`` (after a 429)."""
        if self._limiter is not None:
            await self._limiter.pause_for(delay_s)

    async def state(self) -> dict[str, object]:
        return await self._limiter.state() if self._limiter is not None else {}
