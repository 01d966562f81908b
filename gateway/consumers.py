"""Running consumer groups inside an aiohttp application (which also serves /metrics).

``consumers_ctx(factories)`` is a ``cleanup_ctx`` generator factory: append it
after the Redis context (and the services its groups need: see
:func:`worker_background`). It starts a :class:`~streams.runtime.ConsumerRuntime`,
stores it under ``CONSUMERS`` and on shutdown stops it within ``SHUTDOWN_GRACE_S``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import signal
from collections.abc import AsyncIterator, Callable, Sequence

from aiohttp import web
from prometheus_client import CollectorRegistry

from config import Settings
from gateway.appkeys import CONSUMERS, METRICS_REGISTRY, REDIS, SETTINGS
from gateway.groups import SpecFactory, group_factories, group_requirements, resolve
from gateway.stuck_sweeper import recovery_ctx, sweeper_loop_ctx
from gateway.wiring import streams_config
from storage.redis_client import open_redis
from streams.runtime import ConsumerRuntime
from streams.spec import GroupSpec

CleanupCtx = Callable[[web.Application], AsyncIterator[None]]


def consumers_ctx(
    factories: Sequence[SpecFactory | GroupSpec], *, concurrency: int | None = None
) -> CleanupCtx:
    """A cleanup_ctx running the given groups; ``concurrency`` overrides every spec's."""

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        specs = [f if isinstance(f, GroupSpec) else f(app) for f in factories]
        if concurrency is not None:
            specs = [dataclasses.replace(s, concurrency=concurrency) for s in specs]
        runtime = ConsumerRuntime(
            app[REDIS], streams_config(app[SETTINGS]), app[METRICS_REGISTRY], specs
        )
        await runtime.start()
        app[CONSUMERS] = runtime
        try:
            yield
        finally:
            await runtime.stop()

    return ctx


def worker_ctx(group_names: list[str], concurrency: int | None = None) -> CleanupCtx:
    """The cleanup_ctx of ``echo-gateway worker --group NAME... [--concurrency N]``.

    Unknown names raise :class:`gateway.groups.UnknownGroupError` here, before start.
    """
    return consumers_ctx(resolve(group_names), concurrency=concurrency)


def worker_background(
    group_names: list[str],
    concurrency: int | None = None,
    *,
    already: Sequence[CleanupCtx] = (),
) -> list[CleanupCtx]:
    """What an app appends to run ``group_names`` (all if empty): the services those groups
    need (skipping the ones in ``already``), then the consumers, then the stuck-work sweeper
    (every worker process runs it; one run per interval happens across all of them)."""
    consumers = worker_ctx(group_names, concurrency)
    chosen = group_names or list(group_factories())
    requirements = group_requirements()
    needed: list[CleanupCtx] = []
    for name in chosen:
        for ctx in requirements.get(name, ()):
            if ctx not in needed and ctx not in already:
                needed.append(ctx)
    return [*needed, consumers, recovery_ctx, sweeper_loop_ctx]


async def run_consumers(
    settings: Settings,
    specs: Sequence[GroupSpec],
    *,
    registry: CollectorRegistry | None = None,
    consumer_name: str | None = None,
) -> None:
    """Run ``specs`` in this process until SIGTERM or SIGINT, then stop gracefully.

    For a worker without an HTTP server (tests, scripts); the CLI's worker
    runs :func:`worker_ctx` in an aiohttp app instead, to serve /metrics too.
    """
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with open_redis(settings) as redis:
        runtime = ConsumerRuntime(
            redis, streams_config(settings), registry or CollectorRegistry(), specs,
            consumer_name=consumer_name,
        )
        await runtime.start()
        try:
            await stop.wait()
        finally:
            await runtime.stop()
