"""``create_app(settings)`` and ``create_worker_app(settings)``: they wire clients,
middlewares and routes together, and nothing else."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence

from aiohttp import web
from prometheus_client import CollectorRegistry

from config import Settings
from gateway import health
from gateway.appkeys import HTTP_METRICS, METRICS_REGISTRY, SETTINGS
from gateway.lifecycle import redis_ctx, s3_ctx
from gateway.metrics import HttpMetrics
from gateway.middlewares import gateway_middleware_factory
from gateway.pages import add_page_routes
from gateway.routes import add_api_routes

CleanupCtx = Callable[[web.Application], AsyncIterator[None]]


def _base_app(settings: Settings, middlewares: Sequence[object]) -> web.Application:
    app = web.Application(middlewares=middlewares, client_max_size=settings.max_body_bytes)  # type: ignore[arg-type]
    app[SETTINGS] = settings
    registry = CollectorRegistry()
    app[METRICS_REGISTRY] = registry
    app[HTTP_METRICS] = HttpMetrics(registry)
    app.cleanup_ctx.append(redis_ctx)
    app.cleanup_ctx.append(s3_ctx)
    app.add_routes(health.routes)
    return app


def create_app(settings: Settings, *, background: Sequence[CleanupCtx] = ()) -> web.Application:
    """The gateway application.

    ``background`` adds cleanup contexts that run after the clients are up
    (every consumer group under ``dev``, for instance) and stop before they close.
    """
    app = _base_app(settings, [
        gateway_middleware_factory(
            settings.cors_allow_origins, security_headers=True, max_body_bytes=settings.max_body_bytes
        ),
    ])
    add_api_routes(app)
    add_page_routes(app)
    app.cleanup_ctx.extend(background)
    return app


def create_worker_app(settings: Settings, *, background: Sequence[CleanupCtx]) -> web.Application:
    """A consumer process: the consumer groups in ``background``, and only
    ``/healthz``, ``/readyz`` and ``/metrics`` over HTTP."""
    app = _base_app(settings, [
        gateway_middleware_factory(None, security_headers=False, max_body_bytes=None),
    ])
    app.cleanup_ctx.extend(background)
    return app
