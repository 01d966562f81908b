"""``add_api_routes(app)``: the participant API, the host API (auto-select included), the
OpenAPI document, and the lifecycle of what they share (store, limiters, publisher, presign
client, LLM service, the idle sweeper of :mod:`gateway.idle_finish`)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from aiohttp import web

from gateway import admin_streams, auto_select, host, openapi, participant
from gateway.admin_recovery import add_admin_recovery
from gateway.api_services import ApiServices
from gateway.appkeys import API_SERVICES, METRICS_REGISTRY, PUBLISHER, REDIS, S3, SETTINGS
from gateway.idle_finish import idle_finish_ctx
from gateway.lifecycle import llm_ctx
from gateway.wiring import publisher_for
from storage.redis_autopipeline import open_autopipeline
from storage.s3_client import open_s3


async def api_services_ctx(app: web.Application) -> AsyncIterator[None]:
    """Build :class:`ApiServices` from the app's clients (after ``redis_ctx`` and ``s3_ctx``),
    with the process's auto-pipelined Redis connection, which it owns and closes."""
    settings = app[SETTINGS]
    public = settings.s3_public_endpoint_url
    async with contextlib.AsyncExitStack() as stack:
        s3_presign = app[S3]
        if public and public != settings.s3_endpoint_url:
            # Presigned URLs carry the host they were signed for: sign with the public one.
            s3_presign = await stack.enter_async_context(open_s3(settings, endpoint_url=public))
        autopipeline = await stack.enter_async_context(
            open_autopipeline(settings, app[REDIS], registry=app[METRICS_REGISTRY])
        )
        # The API's publishes share the auto-pipelined connection's writes with its scripts.
        publisher = (app[PUBLISHER] if autopipeline is None
                     else publisher_for(app[REDIS], settings, autopipeline=autopipeline))
        app[API_SERVICES] = ApiServices.build(
            settings, app[REDIS], app[S3], s3_presign, app[METRICS_REGISTRY], publisher,
            autopipeline,
        )
        yield


def add_api_routes(app: web.Application, *, idle_sweeper: bool = True) -> None:
    """Register every participant and host route, ``/api/openapi.json`` and their lifecycle."""
    app.cleanup_ctx.append(api_services_ctx)
    if idle_sweeper:
        app.cleanup_ctx.append(idle_finish_ctx)
    # The LLM service (its job store) backs the host's auto-select routes.
    app.cleanup_ctx.append(llm_ctx)
    app.add_routes(participant.routes)
    app.add_routes(host.routes)
    app.add_routes(auto_select.routes)
    app.add_routes(openapi.routes)
    app.on_startup.append(openapi.keep_document)
    app.add_routes(admin_streams.routes)
    add_admin_recovery(app)
