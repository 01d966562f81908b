"""The participant API (``/api/participant``): the contract in ../shared/CONTRACT.md.

Handlers validate every input first (400), then look the ids up (404), then
check the project is open (403, reads excepted), then take rate-limit quota
(429), and only then change state: so a refused request changes nothing.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime
from typing import Any

import structlog
from aiohttp import BodyPartReader, web
from botocore.exceptions import BotoCoreError, ClientError

from gateway.api_services import ApiServices
from gateway.appkeys import API_SERVICES
from gateway.ids import new_uuid4
from gateway.errors import BadRequest, Forbidden, NotFound, PayloadTooLarge, TooManyRequests
from gateway.middlewares import request_id_of, streams_body
from gateway.responses import json_response
from gateway import validation as v
from storage.conversations import (
    ChunkKeyMismatch, ChunkNotFound, ConversationNotFound, ProjectClosed,
    ProjectNotFound,
)
from storage.ratelimit import RateLimitDecision
from storage.upload_confirmation import (
    UploadVerify, publish_finalize, publish_transcription, publish_verification,
)
from storage.uploads import (
    UploadTooLarge, chunk_object_key, head_object, is_audio_content_type, key_from_file_url,
    object_url, presign_probe_put, probe_object_key, same_media_type, stream_upload,
)
from transcription.status import processing_status

PREFIX = "/api/participant"
NOT_OPEN = "Conversation not open for participation"
CONFIRM_POLL_S = (0.0, 0.15, 0.35, 0.6)
#: Time the last HEAD of the look may take past the budget before the answer is 202.
CONFIRM_HEAD_GRACE_S = 0.5
CONFIRMED_STATES = frozenset({"uploaded", "transcribing", "transcribed"})
PING_FIELDS = ("state", "audio_level", "recorded_seconds", "client_ts", "network", "battery",
               "visibility", "mic", "error", "user_agent")
PROJECT_PUBLIC_FIELDS = (
    "id", "language", "tags", "is_conversation_allowed", "is_get_reply_enabled",
    "is_verify_enabled", "is_verify_on_finish_enabled", "default_conversation_tutorial_slug",
    "default_conversation_title", "default_conversation_description",
    "default_conversation_finish_text", "default_conversation_ask_for_participant_name",
    "conversation_ask_for_participant_name_label",
)

routes = web.RouteTableDef()
log = structlog.get_logger(__name__)


def _services(request: web.Request) -> ApiServices:
    return request.app[API_SERVICES]


def _client_ip(request: web.Request) -> str:
    """The client address for per-IP limits: behind N trusted proxies, the Nth
    X-Forwarded-For entry from the right (entries further left are client-made)."""
    address = request.remote or "unknown"
    hops = request.app[API_SERVICES].settings.trusted_proxy_hops
    if hops:
        forwarded = [a.strip() for a in request.headers.get("X-Forwarded-For", "").split(",") if a.strip()]
        if len(forwarded) >= hops:
            address = forwarded[-hops]
    return address.replace("{", "").replace("}", "")[:64]


def _rate_limited(decision: RateLimitDecision, what: str) -> TooManyRequests:
    return TooManyRequests(
        f"too many {what}; retry in {decision.retry_after_header} s",
        headers=decision.headers(),
        extra={"retry_after_s": decision.retry_after_header},
    )


async def _project(services: ApiServices, project_id: str) -> dict[str, Any]:
    project = await services.store.get_project(project_id)
    if project is None:
        raise NotFound("Project not found")
    return project


async def _conversation(
    services: ApiServices, conversation_id: str, *, write: bool = True
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The conversation and its project; 404 if either is unknown, 403 on a closed project."""
    conversation = await services.store.get_conversation(conversation_id)
    if conversation is None:
        raise NotFound("Conversation not found")
    project = await services.store.get_project(str(conversation["project_id"]))
    if project is None:
        raise NotFound("Conversation not found")
    if write and not project.get("is_conversation_allowed"):
        raise Forbidden(NOT_OPEN)
    return conversation, project


def _public_conversation(conversation: dict[str, Any]) -> dict[str, Any]:
    doc = {k: val for k, val in conversation.items() if k not in ("merged_transcript", "open_chunks")}
    doc["processing_status"] = conversation["status"]
    return doc


# --- projects and conversations


@routes.get(PREFIX + "/projects/{project_id}")
async def get_project(request: web.Request) -> web.Response:
    project_id = v.path_uuid(request, "project_id")
    project = await _project(_services(request), project_id)
    return json_response({k: project.get(k) for k in PROJECT_PUBLIC_FIELDS})


@routes.post(PREFIX + "/projects/{project_id}/conversations/initiate")
async def initiate(request: web.Request) -> web.Response:
    services = _services(request)
    project_id = v.path_uuid(request, "project_id")
    body = await v.read_json_object(request)
    name = v.string(body, "name", max_len=500)
    email = v.string(body, "email", required=False, max_len=320)
    user_agent = v.string(body, "user_agent", required=False, max_len=1000)
    source = v.string(body, "source", required=False, max_len=64)
    visitor_id = v.string(body, "visitor_id", required=False, max_len=128)
    tag_ids = v.uuid_list(body, "tag_id_list")

    project = await _project(services, project_id)
    if not project.get("is_conversation_allowed"):
        raise Forbidden(NOT_OPEN)
    known_tags = {t.get("id"): t for t in project.get("tags") or [] if isinstance(t, dict)}
    unknown = [t for t in tag_ids if t not in known_tags]
    if unknown:
        raise BadRequest(f"tag_id_list: unknown tag ids {', '.join(unknown)}")
    decision = await services.initiate_limiter.hit(_client_ip(request))
    if not decision.allowed:
        raise _rate_limited(decision, "conversations started")

    conversation = await services.store.create_conversation(project_id, {
        "title": name,
        "description": project.get("default_conversation_description"),
        "participant_name": name,
        "participant_email": email,
        "user_agent": user_agent,
        "source": source or "PORTAL_AUDIO",
        "visitor_id": visitor_id,
        "tags": [known_tags[t] for t in tag_ids],
    })
    return json_response(_public_conversation(conversation), headers=decision.headers())


@routes.get(PREFIX + "/projects/{project_id}/conversations/{conversation_id}")
async def get_conversation(request: web.Request) -> web.Response:
    project_id = v.path_uuid(request, "project_id")
    conversation_id = v.path_uuid(request, "conversation_id")
    conversation, _ = await _conversation(_services(request), conversation_id, write=False)
    if conversation["project_id"] != project_id:
        raise NotFound("Conversation not found")
    doc = _public_conversation(conversation)
    doc["processing"] = await processing_status(_services(request).store, conversation_id)
    return json_response(doc)


@routes.get(PREFIX + "/projects/{project_id}/conversations/{conversation_id}/chunks")
async def list_chunks(request: web.Request) -> web.Response:
    services = _services(request)
    project_id = v.path_uuid(request, "project_id")
    conversation_id = v.path_uuid(request, "conversation_id")
    conversation, _ = await _conversation(services, conversation_id, write=False)
    if conversation["project_id"] != project_id:
        raise NotFound("Conversation not found")
    return json_response(await services.store.list_chunks(conversation_id))


@routes.delete(PREFIX + "/projects/{project_id}/conversations/{conversation_id}/chunks/{chunk_id}")
async def delete_chunk(request: web.Request) -> web.Response:
    services = _services(request)
    project_id = v.path_uuid(request, "project_id")
    conversation_id = v.path_uuid(request, "conversation_id")
    chunk_id = v.path_uuid(request, "chunk_id")
    conversation, _ = await _conversation(services, conversation_id)
    if conversation["project_id"] != project_id:
        raise NotFound("Conversation not found")
    deleted = await services.store.delete_chunk(conversation_id, chunk_id)
    # Also after a repeat (404): the first attempt may have deleted the chunk and then
    # failed to publish; finalization is idempotent.
    if await services.store.is_finalizable(conversation_id):
        await publish_finalize(services.publisher, conversation_id, request_id_of(request) or "")
    if not deleted:
        raise NotFound("Chunk not found")
    return json_response(None)


# --- uploads


@routes.post(PREFIX + "/conversations/{conversation_id}/get-upload-url")
async def get_upload_url(request: web.Request) -> web.Response:
    services = _services(request)
    settings = services.settings
    conversation_id = v.path_uuid(request, "conversation_id")
    body = await v.read_json_object(request)
    filename = v.string(body, "filename", max_len=1000)
    content_type = v.string(body, "content_type", max_len=200).strip()
    if not is_audio_content_type(content_type):
        raise BadRequest("content_type: must be an audio type (or video/mp4, video/webm)")
    if v.uuid_field(body, "conversation_id", required=False) not in (None, conversation_id):
        raise BadRequest("conversation_id: differs from the conversation in the path")

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
        raise _rate_limited(decision, "upload URLs for this conversation")
    post = await services.presigner.presign(
        bucket=settings.s3_bucket, key=key, content_type=content_type,
        max_bytes=settings.upload_max_bytes, expires_s=settings.upload_url_expires_s,
    )
    return json_response(
        {"chunk_id": chunk_id, "upload_url": post.url, "fields": post.fields,
         "file_url": object_url(settings, key)},
        headers=decision.headers(),
    )


async def _look_for_object(services: ApiServices, key: str, content_type: str) -> int | None:
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


def _confirm_response(chunk_id: str, status: str, error: str | None = None) -> web.Response:
    if status in CONFIRMED_STATES:
        return json_response({"status": "confirmed", "chunk_id": chunk_id})
    if status == "pending_verification":
        return json_response({"status": "pending_verification", "chunk_id": chunk_id}, status=202)
    return json_response({"status": status, "chunk_id": chunk_id, "error": error})


@routes.post(PREFIX + "/conversations/{conversation_id}/confirm-upload")
async def confirm_upload(request: web.Request) -> web.Response:
    services = _services(request)
    store = services.store
    request_id = request_id_of(request) or ""
    conversation_id = v.path_uuid(request, "conversation_id")
    body = await v.read_json_object(request)
    chunk_id = v.uuid_field(body, "chunk_id")
    assert chunk_id is not None
    file_url = v.string(body, "file_url", max_len=2000, allow_empty=False)
    stamp = v.timestamp(body, "timestamp")
    source = v.string(body, "source", required=False, max_len=64, default="PORTAL_AUDIO")
    key = key_from_file_url(services.settings, file_url)
    if key is None or not key.startswith(f"conversation/{conversation_id}/"):
        raise BadRequest("file_url: not an object of this conversation")

    await _conversation(services, conversation_id)
    chunk = await store.get_chunk(conversation_id, chunk_id)
    if chunk is None:
        raise NotFound("Chunk not found (unknown, or its upload URL expired)")
    if chunk["path"] != key:
        raise BadRequest("file_url: does not match the key issued for this chunk")
    upload = UploadVerify(conversation_id, chunk_id, key, str(chunk["content_type"]))
    if chunk["status"] != "issued":
        # A repeat: answer the current status, and re-publish in case the first
        # attempt stored the state change but died before its event was stored.
        services.metrics.confirmations.labels("repeated").inc()
        if chunk["status"] == "pending_verification":
            await publish_verification(services.publisher, upload, request_id)
        elif chunk["status"] == "uploaded":
            await publish_transcription(services.publisher, upload, request_id)
        return _confirm_response(chunk_id, str(chunk["status"]), chunk.get("error"))

    size = await _look_for_object(services, key, upload.content_type)
    try:
        result = await store.confirm_chunk(
            conversation_id, chunk_id, path=key, timestamp=str(stamp), source=source,
            verified=size is not None, extra={"size": size},
        )
    except ChunkNotFound:
        raise NotFound("Chunk not found (unknown, or its upload URL expired)") from None
    except ChunkKeyMismatch:
        raise BadRequest("file_url: does not match the key issued for this chunk") from None
    except ConversationNotFound:
        raise NotFound("Conversation not found") from None
    if result.status == "uploaded":
        await publish_transcription(services.publisher, upload, request_id)
    elif result.status == "pending_verification":
        await publish_verification(services.publisher, upload, request_id)
    services.metrics.confirmations.labels(result.status if result.created else "repeated").inc()
    return _confirm_response(chunk_id, result.status)


@routes.post(PREFIX + "/conversations/{conversation_id}/upload-text")
async def upload_text(request: web.Request) -> web.Response:
    services = _services(request)
    conversation_id = v.path_uuid(request, "conversation_id")
    body = await v.read_json_object(request)
    stamp = v.timestamp(body, "timestamp")
    content = v.string(body, "content", max_len=100_000, allow_empty=False)
    source = v.string(body, "source", required=False, max_len=64, default="PORTAL_TEXT")
    await _conversation(services, conversation_id)
    try:
        chunk, _ = await services.store.add_text_chunk(
            conversation_id, content=content, timestamp=str(stamp), source=source
        )
    except ConversationNotFound:
        raise NotFound("Conversation not found") from None
    if await services.store.is_finalizable(conversation_id):
        # A text chunk is born transcribed: on a finished (or re-opened) conversation it
        # is itself the last chunk to end. Published on a repeat too: the first attempt may
        # have stored the chunk and then failed to publish (finalization is idempotent).
        await publish_finalize(services.publisher, conversation_id, request_id_of(request) or "")
    return json_response(chunk)


@routes.post(PREFIX + "/conversations/{conversation_id}/check-s3")
async def check_s3(request: web.Request) -> web.Response:
    services = _services(request)
    conversation_id = v.path_uuid(request, "conversation_id")
    await _conversation(services, conversation_id)
    url = await presign_probe_put(
        services.s3_presign, bucket=services.settings.s3_bucket, key=probe_object_key(conversation_id)
    )
    return json_response({"probe_url": url})


@routes.post(PREFIX + "/conversations/{conversation_id}/upload-chunk")
@streams_body
async def upload_chunk(request: web.Request) -> web.Response:
    """Legacy: the gateway streams the ``chunk`` file part to S3, then treats it as confirmed."""
    services = _services(request)
    settings = services.settings
    store = services.store
    conversation_id = v.path_uuid(request, "conversation_id")
    if not request.content_type.startswith("multipart/form-data"):
        raise BadRequest("request body must be multipart/form-data with a 'chunk' file")
    if request.content_length is not None and request.content_length > settings.upload_max_bytes + 64 * 1024:
        raise PayloadTooLarge(f"upload too large: at most {settings.upload_max_bytes} bytes")
    await _conversation(services, conversation_id)

    fields: dict[str, str] = {}
    uploaded: tuple[str, str, str, int] | None = None
    try:
        reader = await request.multipart()
        async for part in reader:
            if not isinstance(part, BodyPartReader):
                raise BadRequest("nested multipart is not accepted")
            if part.name == "chunk" and uploaded is None:
                uploaded = await _stream_chunk(request, services, conversation_id, part)
            elif part.name in ("timestamp", "source"):
                raw = await part.read(decode=False)
                if len(raw) > 200:
                    raise BadRequest(f"{part.name}: too long")
                fields[part.name] = raw.decode("utf-8", "replace")
                if part.name == "timestamp" and uploaded is None:
                    v.timestamp(fields, "timestamp")  # 400 before anything is uploaded
            else:
                # Drain unknown parts without keeping them.
                while await part.read_chunk(64 * 1024):
                    pass
    except ValueError as exc:
        raise BadRequest(f"malformed multipart body: {exc}") from None
    if uploaded is None:
        raise BadRequest("chunk: file part required")
    chunk_id, key, content_type, size = uploaded
    try:
        stamp = v.timestamp(fields, "timestamp", required=False) or datetime.now(UTC).isoformat()
    except BadRequest:
        # The timestamp came after the file: leave no orphan object behind.
        await services.s3.delete_object(Bucket=settings.s3_bucket, Key=key)
        raise
    source = fields.get("source") or "PORTAL_AUDIO"
    try:
        result = await store.confirm_chunk(
            conversation_id, chunk_id, path=key, timestamp=stamp, source=source[:64],
            verified=True, extra={"size": size},
        )
    except (ChunkNotFound, ConversationNotFound):
        raise NotFound("the upload outlived its chunk record; upload again") from None
    await publish_transcription(
        services.publisher, UploadVerify(conversation_id, chunk_id, key, content_type),
        request_id_of(request) or "",
    )
    services.metrics.confirmations.labels("upload_chunk").inc()
    chunk = await store.get_chunk(conversation_id, chunk_id)
    return json_response(chunk or {"id": chunk_id, "status": result.status})


async def _stream_chunk(
    request: web.Request, services: ApiServices, conversation_id: str, part: BodyPartReader
) -> tuple[str, str, str, int]:
    settings = services.settings
    content_type = (part.headers.get("Content-Type") or "").strip()
    if not is_audio_content_type(content_type):
        raise BadRequest("chunk: must be an audio file (audio/*, video/mp4 or video/webm)")
    decision = await services.upload_url_limiter.hit(conversation_id)
    if not decision.allowed:
        raise _rate_limited(decision, "uploads for this conversation")
    chunk_id = str(uuid.uuid4())
    filename = part.filename or "chunk"
    key = chunk_object_key(conversation_id, chunk_id, filename)
    await services.store.issue_chunk(
        conversation_id, chunk_id, path=key, filename=filename[:1000], content_type=content_type,
        ttl_s=settings.upload_url_expires_s + 60,
    )

    async def body_parts() -> Any:
        while True:
            data = await part.read_chunk(256 * 1024)
            if not data:
                return
            yield data

    try:
        size = await stream_upload(
            services.s3, bucket=settings.s3_bucket, key=key, content_type=content_type,
            parts=body_parts(), max_bytes=settings.upload_max_bytes,
        )
    except UploadTooLarge:
        raise PayloadTooLarge(f"upload too large: at most {settings.upload_max_bytes} bytes") from None
    if size == 0:
        await services.s3.delete_object(Bucket=settings.s3_bucket, Key=key)
        raise BadRequest("chunk: the file is empty")
    return chunk_id, key, content_type, size


@routes.post(PREFIX + "/conversations/{conversation_id}/finish")
async def finish(request: web.Request) -> web.Response:
    services = _services(request)
    conversation_id = v.path_uuid(request, "conversation_id")
    await _conversation(services, conversation_id)
    try:
        result = await services.store.finish(conversation_id, "participant")
    except ConversationNotFound:
        raise NotFound("Conversation not found") from None
    if result.finalizable:
        await publish_finalize(services.publisher, conversation_id, request_id_of(request) or "")
    return json_response("OK")


# --- telemetry


def _telemetry(body: dict[str, Any]) -> dict[str, Any]:
    """Known keys with small scalar (or small flat object) values; everything else is dropped."""
    kept: dict[str, Any] = {}
    for name in PING_FIELDS:
        value = body.get(name)
        if isinstance(value, (bool, int, float)) or (isinstance(value, str) and len(value) <= 200):
            kept[name] = value
        elif isinstance(value, dict) and len(value) <= 10:
            flat = {
                str(k)[:40]: val for k, val in value.items()
                if isinstance(val, (bool, int, float)) or (isinstance(val, str) and len(val) <= 100)
            }
            kept[name] = flat
    return kept


async def _read_telemetry(request: web.Request) -> dict[str, Any]:
    try:
        body = await v.read_json_object(request, required=False)
    except BadRequest:
        return {}  # bad telemetry is ignored, never an error
    return _telemetry(body)


async def _ping(request: web.Request, key: str) -> web.Response:
    services = _services(request)
    telemetry = await _read_telemetry(request)
    decision = await services.ping_limiter.hit(_client_ip(request))
    if not decision.allowed:
        raise _rate_limited(decision, "pings")
    telemetry["received_at"] = datetime.now(UTC).isoformat()
    telemetry["remote"] = request.remote
    await services.store.redis.set(key, json.dumps(telemetry), ex=services.settings.ping_ttl_s)
    return json_response({"ok": True})


@routes.post(PREFIX + "/conversations/{conversation_id}/ping")
async def conversation_ping(request: web.Request) -> web.Response:
    services = _services(request)
    conversation_id = v.path_uuid(request, "conversation_id")
    if not await services.store.redis.exists(services.store.conversation_key(conversation_id)):
        raise NotFound("Conversation not found")
    return await _ping(request, services.store.conversation_key(conversation_id) + ":ping")


@routes.post(PREFIX + "/projects/{project_id}/visitors/{visitor_id}/ping")
async def visitor_ping(request: web.Request) -> web.Response:
    services = _services(request)
    project_id = v.path_uuid(request, "project_id")
    visitor_id = request.match_info["visitor_id"]
    if not (0 < len(visitor_id) <= 128) or any(c in visitor_id for c in "{}: \t"):
        raise BadRequest("visitor_id: 1 to 128 characters, no braces, colons or spaces")
    if not await services.store.redis.exists(services.store.project_key(project_id)):
        raise NotFound("Project not found")
    return await _ping(request, services.store.project_key(project_id) + f":visitor:{visitor_id}")

