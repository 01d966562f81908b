"""Handlers of the ``llm`` stream (group ``llm``): conversation summaries and auto-select jobs.

* ``conversation.summarize`` (published by finalization): summarise the merged
  transcript, keep the result in the store as the generation's draft, write
  ``conversation/<id>/summary.json`` to S3, then store the summary on the
  conversation if it is still for the current generation. A redelivery (the S3
  write failed) finds the draft and does not call the model again.
* ``auto_select.requested`` (published by ``POST .../auto-select``): plan the
  batches (kept in the job, so a redelivery reuses them), run the batches not
  yet recorded, each one bounded model call; the last one completes the job.

Both are idempotent under redelivery; a model call that fails for good
raises, so the stream retries the event and finally dead-letters it.
"""

from __future__ import annotations

import structlog

from config import Settings
from events import catalogue as events
from events.catalogue import AutoSelectRequest, SummarizeRequest
from llm.jobs import JobStore, run_batches
from llm.lifecycle import LlmService
from llm.selection import (
    ConversationSource,
    Item,
    items_for_selection,
    pack_batches,
    prompt_budget_tokens,
)
from llm.summary import as_draft, from_draft, put_summary_s3, summarize, summary_s3_key
from storage.conversations import ConversationStore
from storage.redis_client import RedisClient
from storage.s3_client import S3Client
from streams.spec import EventContext, GroupSpec

log = structlog.get_logger(__name__)

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
        self._s3 = s3
        self._settings = settings
        # The store owns the conversation hash: its summary fields are read and written there.
        self._store = ConversationStore(redis, key_prefix=settings.redis_key_prefix)
        self._source = source or StoreConversationSource(self._store)

    @property
    def jobs(self) -> JobStore:
        return self._service.jobs

    async def handle(self, ctx: EventContext) -> None:
        if ctx.type == events.CONVERSATION_SUMMARIZE.name:
            await self.summarize(ctx.payload)
        elif ctx.type == events.AUTO_SELECT_REQUESTED.name:
            await self.auto_select(ctx.payload)

    async def summarize(self, request: SummarizeRequest) -> str:
        """Returns ``ok``, ``already``, ``stale``, ``empty`` or ``no_conversation``."""
        cid, generation = request.conversation_id, request.generation
        inputs = await self._store.summary_inputs(cid)
        skip = inputs.skip_reason(generation)
        if skip is not None:
            return skip  # no_conversation | stale (a newer generation asks) | already | empty
        kept = inputs.draft_for(generation)
        if kept is None:
            produced = await summarize(
                self._service.llm, cid, inputs.merged_transcript, request.language
            )
            # Kept before the S3 write: if that fails, the redelivery reuses it.
            outcome, kept = await self._store.keep_summary_draft(cid, as_draft(produced, generation))
            if kept is None:
                return outcome  # the generation moved on, or got its summary, meanwhile
        else:
            log.info("llm_summary_draft_reused", conversation_id=cid, generation=generation)
        summary = from_draft(cid, kept)
        s3_key = await put_summary_s3(self._s3, self._settings.s3_bucket, summary)
        outcome = await self._store.store_summary(
            cid, generation, text=summary.text, provider=summary.provider, model=summary.model,
            s3_key=s3_key,
        )
        log.info("llm_summary_stored", conversation_id=cid, outcome=outcome,
                 provider=summary.provider)
        return outcome

    async def auto_select(self, request: AutoSelectRequest) -> None:
        job_id = request.job_id
        status = await self.jobs.status(job_id)
        if status is None or status == "completed":
            return  # expired, unknown, or done by an earlier delivery
        rows = await self._source.conversations_for_selection(request.project_id)
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
            request.query,
            batches,
            language=request.language,
            parallel=settings.llm_job_parallel_batches,
            skip=await self.jobs.done_batches(job_id),
        )


def llm_group(handlers: LlmHandlers, settings: Settings) -> GroupSpec:
    """The ``llm`` group: few handlers at once per process (the real bound is the limiter's)."""
    return GroupSpec(
        stream=events.LLM,
        group=events.LLM_GROUP,
        handler=handlers.handle,
        event_types=events.parsers(events.CONVERSATION_SUMMARIZE, events.AUTO_SELECT_REQUESTED),
        concurrency=max(2, settings.llm_max_concurrent_calls),
        # Slow handlers: read ahead no more than one each, so other processes get work.
        prefetch=max(2, settings.llm_max_concurrent_calls),
        max_deliveries=5,
        retry_base_s=2.0,
        retry_max_s=120.0,
    )


__all__ = ["LlmHandlers", "StoreConversationSource", "llm_group", "summary_s3_key"]
