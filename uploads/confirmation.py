"""Background verification of uploads the gateway could not see yet (the ``uploads`` stream).

confirm-upload answers 202 ``pending_verification`` when the object is not
visible within about a second, and publishes ``upload.verify``. This
consumer HEADs the object; while it is missing it *defers* the event
(``Defer``: acked and re-published later, so no HTTP request and no consumer
loop waits) with the delays of ``UPLOAD_VERIFY_DELAYS_S`` (default 1, 2, 4,
8, 15 s: checks at 0, 1, 3, 7, 15 and 30 s). When the object is there, non-empty
and of the declared type, the chunk becomes ``uploaded`` and a transcription
event is published; when the window is spent it becomes ``failed``
("upload not found"). An S3 error on the HEAD (an outage; AWS answers 403, not
404, for a missing object without ListBucket) is deferred too, on a window of
its own: ``UPLOAD_VERIFY_ERROR_WINDOW_S`` (default 600 s) from the first error,
waits from the first of ``UPLOAD_VERIFY_DELAYS_S``, doubling, at most 60 s (the
first error time and the error count ride in the payload, so errors do not use
up the not-found checks). When it is spent the chunk fails with "upload could
not be verified: <error>": a chunk never stays ``pending_verification``, which
would keep its conversation from being finalized.

Like the ``transcription`` group, the group's ``max_deliveries`` is one more
than ``STREAM_MAX_DELIVERIES`` (the verify attempts) and counts *started* attempts (``ctx.attempts``):
an attempt beyond them (the handler kept failing, or its worker kept dying
mid-way) fails the chunk, saying which, instead of leaving it to the dead
letters. A handler that finds its chunk ended (a redelivery after a failed
publish) publishes ``conversation.finalize`` again if the conversation is
finalizable; finalization is idempotent.

Events: ``upload.verify`` in, ``chunk.uploaded`` and ``conversation.finalize`` out
(:mod:`events.catalogue`). ``conversation.finalize`` is published by whoever saw the
conversation become finalizable (finished and every listed chunk in an end state); the
``transcription`` group finalizes exactly once per generation.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from botocore.exceptions import BotoCoreError, ClientError

from config import Settings
from events import catalogue as events
from events.catalogue import ChunkUpload
from storage.conversations import END_STATES, ChunkNotFound, ConversationStore
from storage.s3_client import S3Client
from storage.uploads import head_object, same_media_type
from streams.publisher import Publisher
from streams.spec import EventContext, GroupSpec

log = structlog.get_logger(__name__)

UPLOAD_NOT_FOUND = "upload not found"
UNVERIFIABLE = "upload could not be verified"
MAX_ERROR_CHARS = 500
#: What a HEAD can raise besides "not found": S3 answering an error, or not answering.
S3_ERRORS = (ClientError, BotoCoreError, OSError, TimeoutError)
#: Longest wait between two checks after an S3 error.
ERROR_DELAY_MAX_S = 60.0
#: No shorter wait (the window's last sliver would otherwise spin).
ERROR_DELAY_MIN_S = 0.1
#: Payload fields carried by the deferrals: when the first S3 error's check started (epoch
#: ms) and how many deferrals were for S3 errors (the rest were "not found yet").
ERROR_SINCE_FIELD = "s3_error_since_ms"
ERROR_COUNT_FIELD = "s3_errors"


def _now_ms() -> int:
    # Wall clock, as the envelope's created_ms: deferrals move between processes.
    return int(time.time() * 1000)


def _payload_int(payload: dict[str, Any], name: str) -> int:
    value = payload.get(name)
    return value if isinstance(value, int) and value > 0 else 0


def error_retry_delay_s(
    errors: int, *, elapsed_s: float, window_s: float, base_s: float
) -> float | None:
    """The wait before the next check after an S3 error, or None when the window is spent:
    ``base_s`` doubling with each earlier error, at most ``ERROR_DELAY_MAX_S``, never past the
    window's end (so the last check comes at its end)."""
    remaining_s = window_s - elapsed_s
    if remaining_s <= 0:
        return None
    delay_s = min(ERROR_DELAY_MAX_S, base_s * float(2 ** min(errors, 32)))
    return max(ERROR_DELAY_MIN_S, min(delay_s, remaining_s))


async def attempts_spent_reason(ctx: EventContext, redis: Any, max_attempts: int) -> str:
    """Why the verify attempts ran out: workers stopping mid-way, handler errors, or both."""
    last = await ctx.last_error(redis)
    spent = f"{UNVERIFIABLE}: the check was attempted {max_attempts} times"
    if not ctx.reclaimed_after_crash:
        return f"{spent}, the last ended by a handler error: {last or '(not recorded)'}"
    if last:
        return (f"{spent}; the worker stopped mid-way on the last one, an earlier one ended by "
                f"a handler error: {last}")
    return f"{spent}; the worker stopped mid-way each time"


def make_upload_confirmation_handler(
    *, store: ConversationStore, s3: S3Client, publisher: Publisher, settings: Settings,
    on_outcome: Callable[[str], None] | None = None,
) -> Callable[[EventContext], Awaitable[None]]:
    """The ``upload-confirmation`` group's handler (idempotent: it acts on the chunk's status)."""
    delays_s = settings.upload_verify_delays_s
    error_window_s = settings.upload_verify_error_window_s
    error_base_s = delays_s[0] if delays_s else 1.0

    def outcome(name: str) -> None:
        if on_outcome is not None:
            on_outcome(name)

    async def verify_upload(ctx: EventContext) -> None:
        upload: ChunkUpload = ctx.payload
        chunk = await store.get_chunk(upload.conversation_id, upload.chunk_id)
        if chunk is None or chunk["path"] != upload.key:
            return  # deleted, or not ours: nothing to verify
        if chunk["status"] == "uploaded":
            # Verified before, but the transcription event may not have been stored.
            await events.publish(
                publisher, events.CHUNK_UPLOADED, upload, request_id=ctx.envelope.request_id
            )
            return
        if chunk["status"] in END_STATES:
            # A redelivery may come from a failed finalize publish after the chunk ended.
            await _finalize_if_ready(upload.conversation_id, ctx)
            return
        if chunk["status"] != "pending_verification":
            return
        # Started attempts (that raised, or whose worker died) before the handler ends the
        # chunk itself (STREAM_MAX_DELIVERIES); deferrals do not count (the windows bound them).
        if ctx.attempts > settings.stream_max_deliveries:
            await _fail(upload, await attempts_spent_reason(
                ctx, store.redis, settings.stream_max_deliveries), ctx)
            return
        started_ms = _now_ms()
        # Only a deferred run carries its S3-error record: a run with no deferral yet (a new
        # event, or a dead letter replayed with its payload) starts its own.
        carried = ctx.envelope.payload if ctx.attempt else {}
        errors = _payload_int(carried, ERROR_COUNT_FIELD)
        try:
            info = await head_object(s3, bucket=settings.s3_bucket, key=upload.key)
        except S3_ERRORS as exc:
            reason = f"{type(exc).__name__}: {exc}"
            since_ms = _payload_int(carried, ERROR_SINCE_FIELD) or started_ms
            elapsed_s = max(0.0, (_now_ms() - since_ms) / 1000)
            log.warning("upload_check_failed", conversation_id=upload.conversation_id,
                        chunk_id=upload.chunk_id, attempt=ctx.attempt, errors=errors + 1,
                        elapsed_s=round(elapsed_s, 3), error=reason)
            delay_s = error_retry_delay_s(
                errors, elapsed_s=elapsed_s, window_s=error_window_s, base_s=error_base_s
            )
            if delay_s is not None:
                outcome("deferred")
                ctx.defer(delay_s, {ERROR_SINCE_FIELD: since_ms, ERROR_COUNT_FIELD: errors + 1})
            await _fail(upload, f"{UNVERIFIABLE}: {reason} (S3 errors for {elapsed_s:.0f} s, "
                        f"UPLOAD_VERIFY_ERROR_WINDOW_S={error_window_s:g})", ctx)
            return
        if info is not None:
            if info.size <= 0:
                error = "upload is empty"
            elif not same_media_type(upload.content_type, info.content_type):
                error = f"upload has type {info.content_type}, not {upload.content_type}"
            else:
                await store.mark_uploaded(upload.conversation_id, upload.chunk_id, size=info.size)
                await events.publish(
                    publisher, events.CHUNK_UPLOADED, upload, request_id=ctx.envelope.request_id
                )
                outcome("uploaded")
                return
            await _fail(upload, error, ctx)
            return
        checks = max(0, ctx.attempt - errors)  # earlier "not found yet" deferrals
        if checks < len(delays_s):
            outcome("deferred")
            ctx.defer(delays_s[checks])
        await _fail(upload, UPLOAD_NOT_FOUND, ctx)

    async def _fail(upload: ChunkUpload, error: str, ctx: EventContext) -> None:
        error = error[:MAX_ERROR_CHARS]
        try:
            result = await store.mark_failed(upload.conversation_id, upload.chunk_id, error=error)
        except ChunkNotFound:
            return
        log.info("upload_failed", conversation_id=upload.conversation_id,
                 chunk_id=upload.chunk_id, error=error)
        outcome("failed")
        if result.finalizable:
            await events.publish(
                publisher, events.CONVERSATION_FINALIZE,
                events.FinalizeRequest(upload.conversation_id), request_id=ctx.envelope.request_id,
            )

    async def _finalize_if_ready(conversation_id: str, ctx: EventContext) -> None:
        if await store.is_finalizable(conversation_id):
            await events.publish(
                publisher, events.CONVERSATION_FINALIZE, events.FinalizeRequest(conversation_id),
                request_id=ctx.envelope.request_id,
            )

    return verify_upload


def upload_confirmation_group(
    *, store: ConversationStore, s3: S3Client, publisher: Publisher, settings: Settings,
    on_outcome: Callable[[str], None] | None = None,
) -> GroupSpec:
    """The ``upload-confirmation`` consumer group."""
    return GroupSpec(
        stream=events.UPLOADS,
        group=events.UPLOAD_CONFIRMATION_GROUP,
        handler=make_upload_confirmation_handler(
            store=store, s3=s3, publisher=publisher, settings=settings, on_outcome=on_outcome
        ),
        event_types=events.parsers(events.UPLOAD_VERIFY),
        # One more than our attempts: the handler itself ends the chunk on the last one.
        max_deliveries=settings.stream_max_deliveries + 1,
    )
