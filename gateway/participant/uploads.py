"""Participant upload routes: presigned upload URLs, confirm-upload, the S3 probe and the
legacy streamed upload-chunk. They parse and answer; :mod:`gateway.upload_workflows` does
the confirming and the streaming."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

from aiohttp import BodyPartReader, ClientError, web
from aiohttp.http_exceptions import HttpProcessingError
from pydantic import TypeAdapter, ValidationError

from gateway import upload_workflows as workflows
from gateway import validation as v
from gateway.api_docs import FROM_INITIATE_CONVERSATION, RATE_LIMITED, WRITE_ERRORS, Feed, endpoint
from gateway.api_models import (
    Chunk,
    ConfirmRequest,
    ConfirmResponse,
    ProbeResponse,
    Timestamp,
    UploadChunkForm,
    UploadUrlRequest,
    UploadUrlResponse,
)
from gateway.api_services import ApiServices
from gateway.errors import BadRequest, Forbidden, NotFound, PayloadTooLarge
from gateway.ids import new_uuid4
from gateway.middlewares import request_id_of, streams_body
from gateway.participant import checks
from gateway.participant.checks import NOT_OPEN, PREFIX
from gateway.responses import json_response
from storage.conversations import ConversationNotFound, ProjectClosed, ProjectNotFound
from storage.uploads import (
    chunk_object_key,
    is_audio_content_type,
    key_from_file_url,
    object_url,
    presign_probe_put,
    probe_object_key,
)

#: Bytes read from the multipart body per S3 write of the legacy upload.
PART_READ_BYTES = 256 * 1024
TAGS = ["participant"]
_TIMESTAMP: TypeAdapter[str] = TypeAdapter(Timestamp)

routes = web.RouteTableDef()


@routes.post(PREFIX + "/conversations/{conversation_id}/get-upload-url")
@endpoint("A presigned POST for one chunk (40 per 60 s per conversation)", tags=TAGS,
          body=UploadUrlRequest, responses={200: UploadUrlResponse},
          errors={**WRITE_ERRORS, **RATE_LIMITED},
          fed_by=[Feed("participant_initiate", {"conversation_id": "$response.body#/id"},
                       body={"conversation_id": "$response.body#/id"})])
async def get_upload_url(request: web.Request, body: UploadUrlRequest) -> web.Response:
    services = checks.services(request)
    settings = services.settings
    conversation_id = v.path_uuid(request, "conversation_id")
    filename, content_type = body.filename, body.content_type
    if body.conversation_id is not None and str(body.conversation_id) != conversation_id:
        raise BadRequest("conversation_id: differs from the conversation in the path",
                         code="conversation_id_mismatch")

    # The hot path: one script checks the conversation and its project, takes the
    # rate-limit grant and issues the chunk (on Cluster the project is checked first).
    store = services.store
    project_id = await store.project_of(conversation_id)
    if project_id is None:
        raise NotFound("Conversation not found")
    if store.is_cluster:
        is_open = await store.project_is_open(project_id)
        if is_open is None:
            raise NotFound("Conversation not found")
        if not is_open:
            raise Forbidden(NOT_OPEN)
    chunk_id = new_uuid4()
    key = chunk_object_key(conversation_id, chunk_id, filename)
    try:
        decision = await store.issue_chunk_limited(
            conversation_id, chunk_id, path=key, filename=filename, content_type=content_type,
            ttl_s=settings.upload_url_expires_s + 60, limiter=services.upload_url_limiter,
            project_id=project_id,
        )
    except (ConversationNotFound, ProjectNotFound):
        raise NotFound("Conversation not found") from None
    except ProjectClosed:
        raise Forbidden(NOT_OPEN) from None
    if not decision.allowed:
        raise checks.rate_limited(decision, "upload URLs for this conversation")
    post = await services.presigner.presign(
        bucket=settings.s3_bucket, key=key, content_type=content_type,
        max_bytes=settings.upload_max_bytes, expires_s=settings.upload_url_expires_s,
    )
    return json_response(
        {"chunk_id": chunk_id, "upload_url": post.url, "fields": post.fields,
         "file_url": object_url(settings, key)},
        headers=decision.headers(),
    )


def _confirm_response(confirmation: workflows.Confirmation) -> web.Response:
    chunk_id, status = confirmation.chunk_id, confirmation.status
    if status == "confirmed":
        return json_response({"status": status, "chunk_id": chunk_id})
    if status == "pending_verification":
        return json_response({"status": status, "chunk_id": chunk_id}, status=202)
    return json_response({"status": status, "chunk_id": chunk_id, "error": confirmation.error})


@routes.post(PREFIX + "/conversations/{conversation_id}/confirm-upload")
@endpoint("Confirm an uploaded chunk (idempotent by chunk_id)", tags=TAGS, body=ConfirmRequest,
          responses={200: ConfirmResponse, 202: ConfirmResponse}, errors=WRITE_ERRORS,
          fed_by=[FROM_INITIATE_CONVERSATION, Feed(
              "participant_get_upload_url", {"conversation_id": "$request.path.conversation_id"},
              body={"chunk_id": "$response.body#/chunk_id", "file_url": "$response.body#/file_url"},
          )])
async def confirm_upload(request: web.Request, body: ConfirmRequest) -> web.Response:
    services = checks.services(request)
    conversation_id = v.path_uuid(request, "conversation_id")
    chunk_id, stamp = str(body.chunk_id), body.timestamp
    source = body.source or "PORTAL_AUDIO"
    key = key_from_file_url(services.settings, body.file_url)
    if key is None or not key.startswith(f"conversation/{conversation_id}/"):
        raise BadRequest("file_url: not an object of this conversation", code="foreign_file_url")

    await checks.conversation(services, conversation_id)
    confirmation = await workflows.confirm_upload(
        services, conversation_id, chunk_id, key=key, timestamp=str(stamp), source=source,
        request_id=request_id_of(request) or "",
    )
    return _confirm_response(confirmation)


@routes.post(PREFIX + "/conversations/{conversation_id}/check-s3")
@endpoint("A presigned PUT probe (text/plain, about 60 s)", tags=TAGS,
          responses={200: ProbeResponse}, errors=WRITE_ERRORS, fed_by=[FROM_INITIATE_CONVERSATION])
async def check_s3(request: web.Request) -> web.Response:
    services = checks.services(request)
    conversation_id = v.path_uuid(request, "conversation_id")
    await checks.conversation(services, conversation_id)
    url = await presign_probe_put(
        services.s3_presign, bucket=services.settings.s3_bucket,
        key=probe_object_key(conversation_id),
    )
    return json_response({"probe_url": url})


@routes.post(PREFIX + "/conversations/{conversation_id}/upload-chunk")
@endpoint("Legacy upload through the gateway (streamed to S3)", tags=TAGS,
          body_schema=UploadChunkForm.model_json_schema(), body_media_type="multipart/form-data",
          body_encoding={"chunk": {"contentType": "audio/webm"}},
          responses={200: Chunk}, errors={**WRITE_ERRORS, **RATE_LIMITED}, fed_by=[FROM_INITIATE_CONVERSATION])
@streams_body
async def upload_chunk(request: web.Request) -> web.Response:
    """Legacy: the gateway streams the ``chunk`` file part to S3, then treats it as confirmed."""
    services = checks.services(request)
    settings = services.settings
    conversation_id = v.path_uuid(request, "conversation_id")
    if not request.content_type.startswith("multipart/form-data"):
        raise BadRequest("request body must be multipart/form-data with a 'chunk' file")
    max_body_bytes = settings.upload_max_bytes + 64 * 1024
    if request.content_length is not None and request.content_length > max_body_bytes:
        raise PayloadTooLarge(f"upload too large: at most {settings.upload_max_bytes} bytes")
    await checks.conversation(services, conversation_id)

    fields: dict[str, str] = {}
    uploaded: workflows.StoredUpload | None = None
    try:
        reader = await request.multipart()
        async for part in reader:
            if not isinstance(part, BodyPartReader):
                raise BadRequest("nested multipart is not accepted")
            if part.name == "chunk" and uploaded is None:
                uploaded = await _store_chunk_part(services, conversation_id, part)
            elif part.name in ("timestamp", "source"):
                raw = await part.read(decode=False)
                if len(raw) > 1024:
                    raise BadRequest(f"{part.name}: too long")
                fields[part.name] = raw.decode("utf-8", "replace")
                if part.name == "timestamp" and uploaded is None:
                    _timestamp(fields["timestamp"])  # 400 before anything is uploaded
            else:
                # Drain unknown parts without keeping them.
                while await part.read_chunk(64 * 1024):
                    pass
    except ClientError:
        raise  # an outgoing connection's failure (S3) is not the request's fault
    except (ValueError, HttpProcessingError, ConnectionResetError) as exc:
        # aiohttp's part reader raises these for a bad part header (InvalidHeader), broken
        # framing, or a body that ends before its declared length (the client left).
        raise BadRequest(f"malformed multipart body: {exc}", code="malformed_body") from None
    if uploaded is None:
        raise BadRequest("chunk: file part required")
    try:
        stamp = _timestamp(fields["timestamp"]) if "timestamp" in fields else None
    except BadRequest:
        # The timestamp came after the file: leave no orphan object behind.
        await workflows.discard_upload(services, uploaded)
        raise
    source = fields.get("source") or "PORTAL_AUDIO"
    chunk = await workflows.confirm_stored_upload(
        services, uploaded, timestamp=stamp or datetime.now(UTC).isoformat(), source=source[:64],
        request_id=request_id_of(request) or "",
    )
    return json_response(chunk)


def _timestamp(value: str) -> str:
    try:
        return _TIMESTAMP.validate_python(value)
    except ValidationError:
        raise BadRequest("timestamp: must be an ISO 8601 time") from None


async def _store_chunk_part(
    services: ApiServices, conversation_id: str, part: BodyPartReader
) -> workflows.StoredUpload:
    """The ``chunk`` part, checked (400: not audio; 429: over the upload limit), to S3."""
    content_type = (part.headers.get("Content-Type") or "").strip()
    if not is_audio_content_type(content_type):
        raise BadRequest("chunk: must be an audio file (audio/*, video/mp4 or video/webm)")
    decision = await services.upload_url_limiter.hit(conversation_id)
    if not decision.allowed:
        raise checks.rate_limited(decision, "uploads for this conversation")
    return await workflows.store_upload(
        services, conversation_id, filename=part.filename or "chunk", content_type=content_type,
        parts=_part_bytes(part),
    )


async def _part_bytes(part: BodyPartReader) -> AsyncIterator[bytes]:
    while True:
        data = await part.read_chunk(PART_READ_BYTES)
        if not data:
            return
        yield data
