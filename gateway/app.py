"""``create_app(settings)``: wires clients, middlewares and routes together, and nothing else."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence

from aiohttp import web
from prometheus_client import CollectorRegistry

from config import Settings
from gateway import health
from gateway.appkeys import HTTP_METRICS, METRICS_REGISTRY, SETTINGS
from gateway.lifecycle import redis_ctx, s3_ctx
from gateway.metrics import HttpMetrics
from gateway.middlewares import (
    body_limit_middleware,
    cors_middleware_factory,
    error_middleware,
    metrics_middleware,
    request_id_middleware,
    security_headers_middleware,
)

CleanupCtx = Callable[[web.Application], AsyncIterator[None]]


def create_app(settings: Settings, *, background: Sequence[CleanupCtx] = ()) -> web.Application:
    """The gateway application.

    ``background`` adds cleanup contexts that run after the clients are up
    (consumer groups under ``dev``, for instance) and stop before they close.
    """
    app = web.Application(
        middlewares=[
            request_id_middleware,
            metrics_middleware,
            cors_middleware_factory(settings.cors_allow_origins),
            security_headers_middleware,
            error_middleware,
            body_limit_middleware,
        ],
        client_max_size=settings.max_body_bytes,
    )
    app[SETTINGS] = settings
    registry = CollectorRegistry()
    app[METRICS_REGISTRY] = registry
    app[HTTP_METRICS] = HttpMetrics(registry)

    app.cleanup_ctx.append(redis_ctx)
    app.cleanup_ctx.append(s3_ctx)
    app.cleanup_ctx.extend(background)

    app.add_routes(health.routes)
    return app
