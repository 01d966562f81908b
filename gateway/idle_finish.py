"""Finishing idle conversations: one sweeper per gateway process.

A conversation with no activity for ``IDLE_FINISH_AFTER_S`` is finished, as if the
participant had called finish; if that makes it finalizable, ``conversation.finalize``
is published. Safe in every process at once: each finish is one atomic script, and the
activity index (``echo:idle``) is only a hint.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncIterator

import structlog
from aiohttp import web

from events import catalogue as events
from gateway.api_services import ApiServices
from gateway.appkeys import API_SERVICES
from gateway.background import background_loop
from storage.conversations import ConversationStore
from storage.redis_client import REDIS_UNAVAILABLE_ERRORS
from streams.publisher import Publisher

log = structlog.get_logger(__name__)

IDLE_SWEEP_BATCH = 200


def idle_sweep_interval_s(idle_finish_after_s: float) -> float:
    return max(1.0, min(30.0, idle_finish_after_s / 10))


async def sweep_idle_once(
    store: ConversationStore, publisher: Publisher, idle_finish_after_s: float
) -> int:
    """Finish the conversations idle for ``idle_finish_after_s``; returns how many."""
    finished = await store.finish_idle(
        idle_finish_after_s, batch=IDLE_SWEEP_BATCH,
        retry_s=idle_sweep_interval_s(idle_finish_after_s),
    )
    for conversation_id, result in finished:
        if result.changed:
            log.info("conversation_finished_idle", conversation_id=conversation_id)
        if result.finalizable:
            await events.publish(
                publisher, events.CONVERSATION_FINALIZE, events.FinalizeRequest(conversation_id)
            )
        # Only once its event is stored: if the publish failed, a later sweep takes it again.
        await store.forget_idle(conversation_id)
    return sum(result.changed for _, result in finished)


async def idle_finish_loop(services: ApiServices, stop: asyncio.Event) -> None:
    idle_finish_after_s = services.settings.idle_finish_after_s
    interval_s = idle_sweep_interval_s(idle_finish_after_s)
    while not stop.is_set():
        try:
            await sweep_idle_once(services.store, services.publisher, idle_finish_after_s)
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
    services = app[API_SERVICES]
    async with background_loop(functools.partial(idle_finish_loop, services), name="idle-finish"):
        yield
