"""How an uploaded chunk enters the pipeline, kept apart from HTTP parsing so the
participant routes and (to come) the admin recovery API and a browser page share it.

*Confirm* (the browser uploaded to a presigned POST): the object is looked for about a
second; the chunk then becomes ``uploaded`` (``chunk.uploaded``: transcription) or
``pending_verification`` (``upload.verify``: the upload-confirmation group decides).
Idempotent by chunk id: a repeat answers the chunk's current status and re-publishes its
event, in case the first attempt stored the state change but died before the event.

*Legacy upload* (the gateway streams the file to S3 itself): issue a chunk, stream the
bytes to its object, then confirm it as verified (``chunk.uploaded``).

The callers have parsed and checked the request (ids known, project open, quota taken);
errors raised here are :mod:`gateway.errors`, each mapping to its HTTP status.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import structlog
from botocore.exceptions import BotoCoreError, ClientError

from events import catalogue as events
from events.catalogue import ChunkUpload
from gateway.api_services import ApiServices
from gateway.errors import BadRequest, NotFound, PayloadTooLarge
from storage.conversations import ChunkKeyMismatch, ChunkNotFound, ConversationNotFound
from storage.uploads import (
    UploadTooLarge,
    chunk_object_key,
    head_object,
    same_media_type,
    stream_upload,
)

#: When (s after the start) confirm HEADs the object, within ``UPLOAD_CONFIRM_WAIT_S``.
CONFIRM_POLL_S = (0.0, 0.15, 0.35, 0.6)
#: Time the last HEAD of the look may take past the budget before the answer is 202.
CONFIRM_HEAD_GRACE_S = 0.5
#: Chunk states a confirm answers as ``confirmed``.
CONFIRMED_STATES = frozenset({"uploaded", "transcribing", "transcribed"})
CHUNK_GONE = "Chunk not found (unknown, or its upload URL expired)"
KEY_MISMATCH = "file_url: does not match the key issued for this chunk"

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Confirmation:
    """A chunk's state once confirmed: ``chunk_status`` is the store's state."""

    chunk_id: str
    chunk_status: str
    error: str | None = None

    @property
    def status(self) -> str:
        """The status as the contract names it: ``confirmed`` for any verified state."""
        return "confirmed" if self.chunk_status in CONFIRMED_STATES else self.chunk_status


@dataclass(frozen=True, slots=True)
class StoredUpload:
    """A chunk file the gateway put on S3 itself; its chunk stays ``issued`` until confirmed."""

    conversation_id: str
    chunk_id: str
    key: str
    content_type: str
    size: int


async def look_for_object(services: ApiServices, key: str, content_type: str) -> int | None:
    """The object's size if it is there (non-empty, declared type) within about a second.

    The whole look is bounded by ``UPLOAD_CONFIRM_WAIT_S`` (plus a little for the last
    HEAD); a slow or failing S3 counts as "not visible yet": the answer is then 202 and
    the background verification decides.
    """
    loop = asyncio.get_running_loop()
    started = loop.time()
    budget_s = services.settings.upload_confirm_wait_s
    try:
        async with asyncio.timeout(budget_s + CONFIRM_HEAD_GRACE_S):
            for at_s in CONFIRM_POLL_S:
                if at_s > budget_s:
                    break
                delay = started + at_s - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                info = await head_object(services.s3, bucket=services.settings.s3_bucket, key=key)
                if info is not None:
                    if info.size > 0 and same_media_type(content_type, info.content_type):
                        return info.size
                    return None  # there but wrong: the background check marks it failed
    except TimeoutError:
        log.info("confirm_look_timed_out", key=key, budget_s=budget_s)
    except (ClientError, BotoCoreError) as exc:
        log.warning("confirm_look_failed", key=key, error=str(exc))
    return None


async def _publish_next_step(
    services: ApiServices, upload: ChunkUpload, chunk_status: str, request_id: str
) -> None:
    """The event that takes a chunk on from ``chunk_status`` (none past ``uploaded``)."""
    if chunk_status == "uploaded":
        await events.publish(
            services.publisher, events.CHUNK_UPLOADED, upload, request_id=request_id
        )
    elif chunk_status == "pending_verification":
        await events.publish(
            services.publisher, events.UPLOAD_VERIFY, upload, request_id=request_id
        )


async def confirm_upload(
    services: ApiServices, conversation_id: str, chunk_id: str, *, key: str, timestamp: str,
    source: str, request_id: str = "",
) -> Confirmation:
    """Confirm the issued chunk ``chunk_id`` whose object is ``key``: 404 if the chunk is
    unknown (or its URL expired), 400 if ``key`` is not the one issued for it."""
    store = services.store
    chunk = await store.get_chunk(conversation_id, chunk_id)
    if chunk is None:
        raise NotFound(CHUNK_GONE)
    if chunk["path"] != key:
        raise BadRequest(KEY_MISMATCH, code="foreign_file_url")
    upload = ChunkUpload(conversation_id, chunk_id, key, str(chunk["content_type"]))
    if chunk["status"] != "issued":
        # A repeat: answer the current status, and re-publish in case the first
        # attempt stored the state change but died before its event was stored.
        services.metrics.confirmations.labels("repeated").inc()
        await _publish_next_step(services, upload, str(chunk["status"]), request_id)
        return Confirmation(chunk_id, str(chunk["status"]), chunk.get("error"))

    size = await look_for_object(services, key, upload.content_type)
    try:
        result = await store.confirm_chunk(
            conversation_id, chunk_id, path=key, timestamp=timestamp, source=source,
            verified=size is not None, extra={"size": size},
        )
    except ChunkNotFound:
        raise NotFound(CHUNK_GONE) from None
    except ChunkKeyMismatch:
        raise BadRequest(KEY_MISMATCH, code="foreign_file_url") from None
    except ConversationNotFound:
        raise NotFound("Conversation not found") from None
    await _publish_next_step(services, upload, result.status, request_id)
    services.metrics.confirmations.labels(result.status if result.created else "repeated").inc()
    return Confirmation(chunk_id, result.status)


async def store_upload(
    services: ApiServices, conversation_id: str, *, filename: str, content_type: str,
    parts: AsyncIterator[bytes],
) -> StoredUpload:
    """Issue a chunk and stream ``parts`` to its object, never whole in memory: 413 past
    ``UPLOAD_MAX_BYTES``, 400 (and no object left) for an empty file."""
    settings = services.settings
    chunk_id = str(uuid.uuid4())
    key = chunk_object_key(conversation_id, chunk_id, filename)
    await services.store.issue_chunk(
        conversation_id, chunk_id, path=key, filename=filename[:1000], content_type=content_type,
        ttl_s=settings.upload_url_expires_s + 60,
    )
    try:
        size = await stream_upload(
            services.s3, bucket=settings.s3_bucket, key=key, content_type=content_type,
            parts=parts, max_bytes=settings.upload_max_bytes,
        )
    except UploadTooLarge:
        raise PayloadTooLarge(
            f"upload too large: at most {settings.upload_max_bytes} bytes"
        ) from None
    upload = StoredUpload(conversation_id, chunk_id, key, content_type, size)
    if size == 0:
        await discard_upload(services, upload)
        raise BadRequest("chunk: the file is empty")
    return upload


async def discard_upload(services: ApiServices, upload: StoredUpload) -> None:
    """Delete the object of an upload that will not be confirmed (no orphan left behind);
    its issued chunk expires on its own."""
    await services.s3.delete_object(Bucket=services.settings.s3_bucket, Key=upload.key)


async def confirm_stored_upload(
    services: ApiServices, upload: StoredUpload, *, timestamp: str, source: str,
    request_id: str = "",
) -> dict[str, Any]:
    """Confirm an upload the gateway stored itself (so verified) and hand it to
    transcription; returns the chunk as listed."""
    store = services.store
    try:
        result = await store.confirm_chunk(
            upload.conversation_id, upload.chunk_id, path=upload.key, timestamp=timestamp,
            source=source, verified=True, extra={"size": upload.size},
        )
    except (ChunkNotFound, ConversationNotFound):
        raise NotFound("the upload outlived its chunk record; upload again") from None
    await events.publish(
        services.publisher, events.CHUNK_UPLOADED,
        ChunkUpload(upload.conversation_id, upload.chunk_id, upload.key, upload.content_type),
        request_id=request_id,
    )
    services.metrics.confirmations.labels("upload_chunk").inc()
    chunk = await store.get_chunk(upload.conversation_id, upload.chunk_id)
    return chunk or {"id": upload.chunk_id, "status": result.status}
