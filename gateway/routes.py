"""``add_api_routes(app)``: the participant API, the host API (auto-select included), the
OpenAPI document, and the lifecycle of what they share (store, limiters, publisher, presign
client, LLM service, idle sweeper)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import structlog
from aiohttp import web

from gateway import host, openapi, participant
from gateway.api_services import ApiServices
from llm import http as llm_http
from llm.lifecycle import llm_ctx
from gateway.appkeys import API_SERVICES, METRICS_REGISTRY, REDIS, S3, SETTINGS
from storage.redis_autopipeline import open_autopipeline
from storage.redis_client import REDIS_UNAVAILABLE_ERRORS
from storage.s3_client import open_s3
from storage.upload_confirmation import publish_finalize

log = structlog.get_logger(__name__)

IDLE_SWEEP_BATCH = 200


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
        app[API_SERVICES] = ApiServices.build(
            settings, app[REDIS], app[S3], s3_presign, app[METRICS_REGISTRY], autopipeline
        )
        yield


def idle_sweep_interval_s(idle_finish_after_s: float) -> float:
    return max(1.0, min(30.0, idle_finish_after_s / 10))


async def sweep_idle_once(services: ApiServices) -> int:
    """Finish the conversations idle for ``IDLE_FINISH_AFTER_S``; returns how many."""
    idle_finish_after_s = services.settings.idle_finish_after_s
    finished = await services.store.finish_idle(
        idle_finish_after_s, batch=IDLE_SWEEP_BATCH,
        retry_s=idle_sweep_interval_s(idle_finish_after_s),
    )
    for conversation_id, result in finished:
        if result.changed:
            log.info("conversation_finished_idle", conversation_id=conversation_id)
        if result.finalizable:
            await publish_finalize(services.publisher, conversation_id)
        # Only once its event is stored: if the publish failed, a later sweep takes it again.
        await services.store.forget_idle(conversation_id)
    return sum(result.changed for _, result in finished)


async def idle_finish_loop(services: ApiServices, stop: asyncio.Event) -> None:
    interval_s = idle_sweep_interval_s(services.settings.idle_finish_after_s)
    while not stop.is_set():
        try:
            await sweep_idle_once(services)
        except REDIS_UNAVAILABLE_ERRORS as exc:
            log.warning("idle_sweep_failed", error=str(exc))
        except Exception:
            # Anything else must not end the sweeper of this process for good
            # (CancelledError is a BaseException and still stops it).
            log.exception("idle_sweep_failed")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval_s)


async def idle_finish_ctx(app: web.Application) -> AsyncIterator[None]:
    """Run the idle sweeper in this process (safe in every process: each finish is atomic)."""
    stop = asyncio.Event()
    task = asyncio.create_task(idle_finish_loop(app[API_SERVICES], stop), name="idle-finish")
    try:
        yield
    finally:
        # The flag ends the loop even if a library swallowed the cancellation
        # (redis-py can turn a cancelled wait into its TimeoutError).
        stop.set()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def add_api_routes(app: web.Application, *, idle_sweeper: bool = True) -> None:
    """Register every participant and host route, ``/api/openapi.json`` and their lifecycle."""
    app.cleanup_ctx.append(api_services_ctx)
    if idle_sweeper:
        app.cleanup_ctx.append(idle_finish_ctx)
    # The LLM service (its job store) backs the host's auto-select routes.
    app.cleanup_ctx.append(llm_ctx)
    app.add_routes(participant.routes)
    app.add_routes(host.routes)
    app.add_routes(llm_http.routes)
    app.add_routes(openapi.routes)
