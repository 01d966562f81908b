"""Handlers of the ``llm`` stream (group ``llm``): conversation summaries and auto-select jobs.

* ``conversation.summarize`` (published by finalization): summarise the merged
  transcript, write ``conversation/<id>/summary.json`` to S3, then store the
  summary on the conversation if it is still for the current generation.
* ``auto_select.requested`` (published by ``POST .../auto-select``): plan the
  batches (kept in the job, so a redelivery reuses them), run the batches not
  yet recorded, each one bounded model call; the last one completes the job.

Both are idempotent under redelivery; a model call that fails for good
raises, so the stream retries the event and finally dead-letters it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import structlog
from aiohttp import web

from config import Settings
from gateway.appkeys import LLM, REDIS, S3, SETTINGS
from llm.jobs import JobStore, run_batches
from llm.lifecycle import LlmService
from llm.selection import (
    ConversationSource,
    Item,
    items_for_selection,
    pack_batches,
    prompt_budget_tokens,
)
from llm.summary import put_summary_s3, summarize, summary_s3_key
from storage.conversations import ConversationStore
from storage.redis_client import RedisClient, lua_source
from storage.s3_client import S3Client
from streams import names
from streams.spec import EventContext, GroupSpec

log = structlog.get_logger(__name__)

SUMMARIZE_EVENT = "conversation.summarize"
AUTO_SELECT_EVENT = "auto_select.requested"


class StoreConversationSource:
    """:class:`~llm.selection.ConversationSource` on the Redis conversation store."""

    def __init__(self, store: ConversationStore, *, limit: int = 100_000) -> None:
        self._store = store
        self._limit = limit

    async def conversations_for_selection(
        self, project_id: str
    ) -> list[tuple[str, str | None, str | None]]:
        docs = await self._store.list_conversations(project_id, limit=self._limit)
        return [(d["id"], d.get("summary"), d.get("merged_transcript")) for d in docs]


def _required_str(payload: Mapping[str, Any], name: str) -> str:
    value = payload[name]
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name} must be a non-empty string")
    return value


def parse_summarize(payload: dict[str, Any]) -> dict[str, Any]:
    return {
        "conversation_id": _required_str(payload, "conversation_id"),
        "generation": int(payload.get("generation", 0)),
        "language": payload.get("language") or None,
    }


def parse_auto_select(payload: dict[str, Any]) -> dict[str, Any]:
    return {
        "job_id": _required_str(payload, "job_id"),
        "project_id": _required_str(payload, "project_id"),
        "query": _required_str(payload, "query"),
        "language": payload.get("language") or None,
    }


class LlmHandlers:
    """The ``llm`` group's handler, dispatching on the event type."""

    def __init__(
        self,
        service: LlmService,
        *,
        redis: RedisClient,
        s3: S3Client,
        settings: Settings,
        source: ConversationSource | None = None,
    ) -> None:
        self._service = service
        self._redis = redis
        self._s3 = s3
        self._settings = settings
        self._store = ConversationStore(redis, key_prefix=settings.redis_key_prefix)
        self._source = source or StoreConversationSource(self._store)
        self._store_summary = redis.register_script(lua_source(__file__, "store_summary.lua"))

    @property
    def jobs(self) -> JobStore:
        return self._service.jobs

    async def handle(self, ctx: EventContext) -> None:
        if ctx.type == SUMMARIZE_EVENT:
            await self.summarize(ctx.payload)
        elif ctx.type == AUTO_SELECT_EVENT:
            await self.auto_select(ctx.payload)

    async def summarize(self, payload: Mapping[str, Any]) -> str:
        """Returns ``ok``, ``already``, ``stale``, ``empty`` or ``no_conversation``."""
        cid, generation = payload["conversation_id"], payload["generation"]
        key = self._store.conversation_key(cid)
        transcript, current_gen, summary_gen = await self._redis.hmget(
            key, ["merged_transcript", "final_gen", "summary_gen"]
        )
        if current_gen is None and transcript is None:
            return "no_conversation"
        if str(current_gen or 0) != str(generation):
            return "stale"  # a newer generation asks for its own summary
        if summary_gen == str(generation):
            return "already"
        if not transcript or not transcript.strip():
            return "empty"
        summary = await summarize(self._service.llm, cid, transcript, payload.get("language"))
        s3_key = await put_summary_s3(self._s3, self._settings.s3_bucket, summary)
        outcome = str(
            await self._store_summary(
                keys=[key],
                args=[generation, summary.text, summary.provider, summary.model, s3_key],
            )
        )
        log.info("llm_summary_stored", conversation_id=cid, outcome=outcome,
                 provider=summary.provider)
        return outcome

    async def auto_select(self, payload: Mapping[str, Any]) -> None:
        job_id = payload["job_id"]
        status = await self.jobs.status(job_id)
        if status is None or status == "completed":
            return  # expired, unknown, or done by an earlier delivery
        rows = await self._source.conversations_for_selection(payload["project_id"])
        settings = self._settings
        packed = pack_batches(
            items_for_selection(rows),
            settings.llm_batch_size,
            prompt_budget_tokens(settings.llm_context_tokens),
        )
        texts = {cid: text for batch in packed for cid, text in batch}
        llm = self._service.llm
        plan = await self.jobs.start(
            job_id,
            plan=[[cid for cid, _ in batch] for batch in packed],
            provider=llm.provider.name,
            model=llm.model,
        )
        batches: list[list[Item]] = [
            [(cid, texts[cid]) for cid in ids if cid in texts] for ids in plan
        ]
        await run_batches(
            llm,
            self.jobs,
            job_id,
            payload["query"],
            batches,
            language=payload.get("language"),
            parallel=settings.llm_job_parallel_batches,
            skip=await self.jobs.done_batches(job_id),
        )


def llm_group(handlers: LlmHandlers, settings: Settings) -> GroupSpec:
    """The ``llm`` group: few handlers at once per process (the real bound is the limiter's)."""
    return GroupSpec(
        stream=names.LLM,
        group=names.LLM_GROUP,
        handler=handlers.handle,
        event_types={SUMMARIZE_EVENT: parse_summarize, AUTO_SELECT_EVENT: parse_auto_select},
        concurrency=max(2, settings.llm_max_concurrent_calls),
        max_deliveries=5,
        retry_base_s=2.0,
        retry_max_s=120.0,
    )


def llm_spec(app: web.Application) -> GroupSpec:
    """The registry factory (``streams.registry``); needs ``llm_ctx`` before the consumers."""
    handlers = LlmHandlers(app[LLM], redis=app[REDIS], s3=app[S3], settings=app[SETTINGS])
    return llm_group(handlers, app[SETTINGS])


__all__ = ["LlmHandlers", "StoreConversationSource", "llm_group", "llm_spec", "summary_s3_key"]
