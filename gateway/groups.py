"""Every consumer group the ``worker`` command can run, by group name.

To add a group: write its handler in a handler package (a function returning a
:class:`~streams.spec.GroupSpec` from explicit clients), then add one line to
:func:`group_factories` building it from the application's clients, and, if
it needs a service of its own, one line to :func:`group_requirements`.
``echo-gateway worker --group NAME`` looks names up here.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

from aiohttp import web

from events import catalogue as events
from gateway.appkeys import LLM, METRICS_REGISTRY, PUBLISHER, REDIS, S3, SETTINGS, TRANSCRIPTION
from gateway.lifecycle import llm_ctx, transcription_ctx
from llm.handlers import LlmHandlers, llm_group
from storage.conversations import ConversationStore
from streams.spec import GroupSpec
from transcription.lifecycle import transcription_group_for
from uploads.confirmation import upload_confirmation_group
from uploads.metrics import VerificationMetrics

SpecFactory = Callable[[web.Application], GroupSpec]
CleanupCtx = Callable[[web.Application], AsyncIterator[None]]


class UnknownGroupError(LookupError):
    """A group name the registry does not know."""


def upload_confirmation_spec(app: web.Application) -> GroupSpec:
    settings = app[SETTINGS]
    metrics = VerificationMetrics(app[METRICS_REGISTRY])
    return upload_confirmation_group(
        store=ConversationStore(app[REDIS], key_prefix=settings.redis_key_prefix),
        s3=app[S3], publisher=app[PUBLISHER], settings=settings, on_outcome=metrics.record,
    )


def transcription_spec(app: web.Application) -> GroupSpec:
    """Needs ``transcription_ctx`` before the consumers."""
    return transcription_group_for(
        app[TRANSCRIPTION], settings=app[SETTINGS], redis=app[REDIS], s3=app[S3],
        publisher=app[PUBLISHER],
    )


def llm_spec(app: web.Application) -> GroupSpec:
    """Needs ``llm_ctx`` before the consumers."""
    handlers = LlmHandlers(app[LLM], redis=app[REDIS], s3=app[S3], settings=app[SETTINGS])
    return llm_group(handlers, app[SETTINGS])


def group_factories() -> dict[str, SpecFactory]:
    """Group name -> factory. A fresh dict each call (no module-level mutable state)."""
    return {
        events.UPLOAD_CONFIRMATION_GROUP: upload_confirmation_spec,
        events.TRANSCRIPTION_GROUP: transcription_spec,
        events.LLM_GROUP: llm_spec,
    }


def group_requirements() -> dict[str, tuple[CleanupCtx, ...]]:
    """Group name -> cleanup contexts its spec factory needs to have run first
    (the services it reads from the app). Groups not listed need only Redis and S3."""
    return {
        events.TRANSCRIPTION_GROUP: (transcription_ctx,),
        events.LLM_GROUP: (llm_ctx,),
    }


def resolve(
    group_names: list[str], factories: dict[str, SpecFactory] | None = None
) -> list[SpecFactory]:
    """The factories of ``group_names`` (all known groups if empty); raise on an unknown name."""
    factories = group_factories() if factories is None else factories
    if not group_names:
        return list(factories.values())
    unknown = [n for n in group_names if n not in factories]
    if unknown:
        known = ", ".join(sorted(factories)) or "(none registered)"
        raise UnknownGroupError(f"unknown group(s) {', '.join(unknown)}; known: {known}")
    return [factories[n] for n in group_names]
