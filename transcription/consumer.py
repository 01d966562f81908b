"""The ``transcription`` consumer group: chunks to text, and finalization.

Events on the ``transcription`` stream:

* ``chunk.uploaded`` ``{conversation_id, chunk_id, key, content_type}``
  (idempotency key ``transcribe:<chunk_id>``): fetch the object (bounded
  temporary file), transcribe it, store the transcript, mark ``transcribed``;
* ``conversation.finalize`` ``{conversation_id}``: :class:`~transcription.finalization.Finalizer`.

Failures, by kind (:mod:`transcription.errors`):

* a permanent error (unusable audio) marks the chunk ``failed`` with a
  readable error at once;
* a transient error (S3 or the provider unreachable, 5xx, timeouts) defers
  the event (``Defer``: acked and re-published later, holding no loop) with
  back-off from 1 s, doubling, at most ``TRANSCRIPTION_RETRY_MAX_DELAY_S``,
  until ``TRANSCRIPTION_RETRY_WINDOW_S`` has passed since the start of the
  first attempt that met one (carried in the payload as ``transient_since_ms``);
  then the chunk fails with the last error. An outage costs time, not attempts;
* anything else (a bug) is raised, and the runtime retries it with back-off.
  The group's ``max_deliveries`` is one more than ``TRANSCRIPTION_MAX_ATTEMPTS``
  and counts *started* attempts (``ctx.attempts``: an entry a dying worker
  took but never started costs nothing), so the handler always sees the last
  attempt itself: a failure on it, or an attempt beyond it (the worker died
  during the last one, e.g. ``kill -9``), marks the chunk ``failed`` saying
  which it was, instead of leaving it to the dead letters.

A failed chunk is an end state, so one bad chunk never holds its conversation
back. The handler is idempotent: it acts on the chunk's status (an ended chunk
is left alone), and a redelivery re-publishes the finalize event in case the
first delivery died between the transition and the publish.
"""

from __future__ import annotations

import time
from typing import Any

import structlog

from config import Settings
from events import catalogue as events
from events.catalogue import ChunkUpload, FinalizeRequest
from storage.conversations import END_STATES, ChunkNotFound, ConversationStore
from storage.s3_client import S3Client
from streams.publisher import Publisher
from streams.spec import Defer, EventContext, GroupSpec
from transcription.base import Transcriber
from transcription.errors import PermanentTranscriptionError, TransientTranscriptionError
from transcription.fetch import fetched_object
from transcription.finalization import Finalizer
from transcription.metrics import TranscriptionMetrics

log = structlog.get_logger(__name__)

MAX_ERROR_CHARS = 500
#: The first wait after a transient error; it doubles with each deferral.
RETRY_BASE_S = 1.0
#: No shorter wait (the window's last sliver would otherwise spin).
RETRY_MIN_S = 0.2
#: Payload field carried by the deferrals: when the first attempt that met a transient
#: error started (epoch ms); the retry window is measured from it.
TRANSIENT_SINCE_FIELD = "transient_since_ms"


def _now_ms() -> int:
    # Wall clock, as the envelope's created_ms: deferrals move between processes.
    return int(time.time() * 1000)


def transient_retry_delay_s(
    deferrals: int, *, elapsed_s: float, window_s: float, max_delay_s: float,
    retry_after_s: float | None = None,
) -> float | None:
    """The wait before the next try after a transient error, or None when the window is spent.

    ``deferrals``: how many times the event was deferred before; ``elapsed_s``: time since
    the window opened. The wait never ends past the window, so the last try comes at its end.
    """
    remaining_s = window_s - elapsed_s
    if remaining_s <= 0:
        return None
    delay_s = min(max_delay_s, RETRY_BASE_S * float(2 ** min(deferrals, 32)))
    if retry_after_s:
        delay_s = max(delay_s, min(retry_after_s, max_delay_s))
    return max(RETRY_MIN_S, min(delay_s, remaining_s))


def _since_ms(payload: dict[str, Any]) -> int | None:
    value = payload.get(TRANSIENT_SINCE_FIELD)
    return value if isinstance(value, int) and value > 0 else None


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
                # The event's id, not the entry's: the same across redeliveries, deferrals
                # and a dead-letter replay (a new entry), so a replay takes over the claim
                # its dead run left instead of being turned away as another event's.
                await self._finalizer.finalize(
                    request.conversation_id, ctx.envelope.id, ctx.envelope.request_id
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
        if ctx.attempts > self.max_attempts:
            await self._fail(ctx, upload, await self._attempts_spent(ctx))
            return
        started_ms = _now_ms()
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
        except TransientTranscriptionError as exc:
            await self._retry_later(ctx, upload, exc, started_ms)
            return
        except Exception as exc:
            # Unexpected (a bug): the runtime retries; on the last attempt we end the chunk
            # ourselves so that it cannot hold the conversation back in the dead letters.
            if ctx.attempts >= self.max_attempts:
                await self._fail(ctx, upload, f"transcription failed after {ctx.attempts} "
                                 f"attempts, the last ended by a handler error: "
                                 f"{type(exc).__name__}: {exc}")
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

    async def _retry_later(
        self, ctx: EventContext, upload: ChunkUpload, exc: TransientTranscriptionError,
        started_ms: int,
    ) -> None:
        """Defer the event after a transient error, or fail the chunk once the window is spent."""
        # Only a deferred run carries its window's start: a run with no deferral yet (a new
        # event, or a dead letter replayed with its payload) opens its own window.
        since_ms = (_since_ms(ctx.envelope.payload) if ctx.attempt else None) or started_ms
        elapsed_s = max(0.0, (_now_ms() - since_ms) / 1000)
        window_s = self._settings.transcription_retry_window_s
        error = f"{type(exc).__name__}: {exc}"
        delay_s = transient_retry_delay_s(
            ctx.attempt, elapsed_s=elapsed_s, window_s=window_s,
            max_delay_s=self._settings.transcription_retry_max_delay_s,
            retry_after_s=exc.retry_after_s,
        )
        if delay_s is None:
            tries = ctx.attempt + 1
            await self._fail(ctx, upload, f"transcription gave up after transient errors for "
                             f"{elapsed_s:.0f} s ({tries} {'try' if tries == 1 else 'tries'}, "
                             f"TRANSCRIPTION_RETRY_WINDOW_S={window_s:g}); the last: {error}")
            return
        self._metrics.chunks.labels("retried").inc()
        log.info("chunk_transcription_deferred", delay_s=round(delay_s, 3),
                 elapsed_s=round(elapsed_s, 3), deferrals=ctx.attempt, error=error)
        raise Defer(delay_s, {TRANSIENT_SINCE_FIELD: since_ms})

    async def _attempts_spent(self, ctx: EventContext) -> str:
        """Why the attempts ran out: workers stopping mid-way, handler errors, or both."""
        last = await ctx.last_error(self._store.redis)
        spent = f"transcription gave up after {self.max_attempts} attempts"
        if not ctx.reclaimed_after_crash:
            return f"{spent}, the last ended by a handler error: {last or '(not recorded)'}"
        if last:
            return (f"{spent}: the worker stopped mid-way on the last one; an earlier one "
                    f"ended by a handler error: {last}")
        return f"{spent}: the worker stopped mid-way each time"

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
        # Slow handlers: read ahead no more than one each, so other processes get work.
        prefetch=settings.transcription_concurrency,
        # One more than our attempts: the handler itself ends the chunk on the last one.
        max_deliveries=settings.transcription_max_attempts + 1,
    )

