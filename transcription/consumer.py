"""The ``transcription`` consumer group: chunks to text, and finalization.

Events on the ``transcription`` stream:

* ``chunk.uploaded`` ``{conversation_id, chunk_id, key, content_type}``
  (idempotency key ``transcribe:<chunk_id>``): fetch the object (bounded
  temporary file), transcribe it, store the transcript, mark ``transcribed``;
* ``conversation.finalize`` ``{conversation_id}``: :class:`~transcription.finalization.Finalizer`.

Failures: a permanent error (:mod:`transcription.errors`) marks the chunk
``failed`` with a readable error at once. Anything else is raised, so the
runtime retries with back-off. The group's ``max_deliveries`` is one more than
``TRANSCRIPTION_MAX_ATTEMPTS``, so the handler always sees the last attempt
itself: a failure on it, or a delivery beyond it (the worker died during the
last attempt, e.g. ``kill -9``), marks the chunk ``failed`` with the last
error instead of leaving it to the dead letters. A failed chunk is an end
state, so one bad chunk never holds its conversation back.

The handler is idempotent: it acts on the chunk's status (an ended chunk is
left alone), and a redelivery re-publishes the finalize event in case the
first delivery died between the transition and the publish.
"""

from __future__ import annotations

from typing import Any

import structlog

from config import Settings
from events import catalogue as events
from events.catalogue import ChunkUpload, FinalizeRequest
from storage.conversations import END_STATES, ChunkNotFound, ConversationStore
from storage.s3_client import S3Client
from streams.publisher import Publisher
from streams.spec import EventContext, GroupSpec
from transcription.base import Transcriber
from transcription.errors import PermanentTranscriptionError
from transcription.fetch import fetched_object
from transcription.finalization import Finalizer
from transcription.metrics import TranscriptionMetrics

log = structlog.get_logger(__name__)

MAX_ERROR_CHARS = 500


class TranscriptionHandler:
    """The group's handler; one instance per process, built by :func:`transcription_group`."""

    def __init__(
        self, *, store: ConversationStore, s3: S3Client, publisher: Publisher,
        transcriber: Transcriber, finalizer: Finalizer, settings: Settings,
        metrics: TranscriptionMetrics,
    ) -> None:
        self._store = store
        self._s3 = s3
        self._publisher = publisher
        self._transcriber = transcriber
        self._finalizer = finalizer
        self._settings = settings
        self._metrics = metrics
        self.max_attempts = settings.transcription_max_attempts

    async def __call__(self, ctx: EventContext) -> None:
        if ctx.type == events.CONVERSATION_FINALIZE.name:
            request: FinalizeRequest = ctx.payload
            with structlog.contextvars.bound_contextvars(conversation_id=request.conversation_id):
                await self._finalizer.finalize(
                    request.conversation_id, ctx.entry_id, ctx.envelope.request_id
                )
            return
        upload: ChunkUpload = ctx.payload
        with structlog.contextvars.bound_contextvars(
            conversation_id=upload.conversation_id, chunk_id=upload.chunk_id
        ):
            await self._transcribe(ctx, upload)

    async def _transcribe(self, ctx: EventContext, upload: ChunkUpload) -> None:
        cid, chunk_id = upload.conversation_id, upload.chunk_id
        chunk = await self._store.get_chunk(cid, chunk_id)
        if chunk is None or chunk["path"] != upload.key:
            return  # deleted, or not this chunk's object
        status = chunk["status"]
        if status in END_STATES:
            if ctx.deliveries > 1 and await self._store.is_finalizable(cid):
                await events.publish(
                    self._publisher, events.CONVERSATION_FINALIZE, FinalizeRequest(cid),
                    request_id=ctx.envelope.request_id,
                )
            return
        if status not in ("uploaded", "transcribing"):
            return  # still being verified: the verifier publishes again when it is uploaded
        if ctx.deliveries > self.max_attempts:
            last = await ctx.last_error(self._store.redis)
            await self._fail(ctx, upload, f"transcription gave up after {self.max_attempts} "
                             f"attempts (the worker stopped mid-way){': ' + last if last else ''}")
            return
        if status == "uploaded":
            await self._store.mark_transcribing(cid, chunk_id)
        try:
            language = await self._language(chunk)
            async with fetched_object(
                self._s3, bucket=self._settings.s3_bucket, key=upload.key,
                max_bytes=self._settings.transcription_max_bytes,
            ) as path:
                result = await self._transcriber.transcribe(
                    path, language=language, content_type=upload.content_type
                )
        except PermanentTranscriptionError as exc:
            await self._fail(ctx, upload, str(exc))
            return
        except Exception as exc:
            # Transient (or unexpected): the runtime retries; on the last attempt we end the
            # chunk ourselves so that it cannot hold the conversation back in the dead letters.
            if ctx.deliveries >= self.max_attempts:
                await self._fail(ctx, upload, f"transcription failed after {ctx.deliveries} "
                                 f"attempts: {type(exc).__name__}: {exc}")
                return
            self._metrics.chunks.labels("retried").inc()
            raise
        try:
            result_state = await self._store.mark_transcribed(cid, chunk_id, transcript=result.text)
        except ChunkNotFound:
            return  # deleted meanwhile
        self._metrics.chunks.labels("transcribed").inc()
        log.info("chunk_transcribed", provider=result.provider, duration_s=result.duration_s,
                 chars=len(result.text))
        await self._after_end(ctx, cid, result_state.changed, result_state.finalizable)

    async def _language(self, chunk: dict[str, Any]) -> str | None:
        if self._settings.transcription_language:
            return self._settings.transcription_language
        conversation = await self._store.get_conversation(str(chunk["conversation_id"]))
        if conversation is None or not conversation.get("project_id"):
            return None
        project = await self._store.get_project(str(conversation["project_id"]))
        language = (project or {}).get("language")
        return str(language) if language else None

    async def _fail(self, ctx: EventContext, upload: ChunkUpload, error: str) -> None:
        error = error[:MAX_ERROR_CHARS]
        try:
            result = await self._store.mark_failed(
                upload.conversation_id, upload.chunk_id, error=error
            )
        except ChunkNotFound:
            return
        self._metrics.chunks.labels("failed").inc()
        log.warning("chunk_transcription_failed", error=error)
        await self._after_end(ctx, upload.conversation_id, result.changed, result.finalizable)

    async def _after_end(
        self, ctx: EventContext, conversation_id: str, changed: bool, finalizable: bool
    ) -> None:
        # Only the transition that made the conversation finalizable publishes; a redelivery
        # publishes again (the first delivery may have died before its publish).
        if finalizable and (changed or ctx.deliveries > 1):
            await events.publish(
                self._publisher, events.CONVERSATION_FINALIZE, FinalizeRequest(conversation_id),
                request_id=ctx.envelope.request_id,
            )


def transcription_group(handler: TranscriptionHandler, settings: Settings) -> GroupSpec:
    return GroupSpec(
        stream=events.TRANSCRIPTION,
        group=events.TRANSCRIPTION_GROUP,
        handler=handler,
        event_types=events.parsers(events.CHUNK_UPLOADED, events.CONVERSATION_FINALIZE),
        concurrency=settings.transcription_concurrency,
        # One more than our attempts: the handler itself ends the chunk on the last one.
        max_deliveries=settings.transcription_max_attempts + 1,
    )

