"""Participant routes for projects, conversations, their chunk lists, text chunks and finish."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from events import catalogue as events
from events.catalogue import FinalizeRequest
from gateway import validation as v
from gateway.api_services import ApiServices
from gateway.errors import BadRequest, Forbidden, NotFound
from gateway.middlewares import request_id_of
from gateway.participant import checks
from gateway.participant.checks import NOT_OPEN, PREFIX
from gateway.responses import json_response
from storage.conversations import ConversationNotFound
from transcription.status import processing_status

PROJECT_PUBLIC_FIELDS = (
    "id", "language", "tags", "is_conversation_allowed", "is_get_reply_enabled",
    "is_verify_enabled", "is_verify_on_finish_enabled", "default_conversation_tutorial_slug",
    "default_conversation_title", "default_conversation_description",
    "default_conversation_finish_text", "default_conversation_ask_for_participant_name",
    "conversation_ask_for_participant_name_label",
)

routes = web.RouteTableDef()


def _public_conversation(conversation: dict[str, Any]) -> dict[str, Any]:
    doc = {
        k: val for k, val in conversation.items()
        if k not in ("merged_transcript", "open_chunks")
    }
    doc["processing_status"] = conversation["status"]
    return doc


async def _publish_finalize(
    request: web.Request, services: ApiServices, conversation_id: str
) -> None:
    await events.publish(
        services.publisher, events.CONVERSATION_FINALIZE, FinalizeRequest(conversation_id),
        request_id=request_id_of(request) or "",
    )


@routes.get(PREFIX + "/projects/{project_id}")
async def get_project(request: web.Request) -> web.Response:
    project_id = v.path_uuid(request, "project_id")
    project = await checks.project(checks.services(request), project_id)
    return json_response({k: project.get(k) for k in PROJECT_PUBLIC_FIELDS})


@routes.post(PREFIX + "/projects/{project_id}/conversations/initiate")
async def initiate(request: web.Request) -> web.Response:
    services = checks.services(request)
    project_id = v.path_uuid(request, "project_id")
    body = await v.read_json_object(request)
    name = v.string(body, "name", max_len=500)
    email = v.string(body, "email", required=False, max_len=320)
    user_agent = v.string(body, "user_agent", required=False, max_len=1000)
    source = v.string(body, "source", required=False, max_len=64)
    visitor_id = v.string(body, "visitor_id", required=False, max_len=128)
    tag_ids = v.uuid_list(body, "tag_id_list")

    project = await checks.project(services, project_id)
    if not project.get("is_conversation_allowed"):
        raise Forbidden(NOT_OPEN)
    known_tags = {t.get("id"): t for t in project.get("tags") or [] if isinstance(t, dict)}
    unknown = [t for t in tag_ids if t not in known_tags]
    if unknown:
        raise BadRequest(f"tag_id_list: unknown tag ids {', '.join(unknown)}")
    decision = await services.initiate_limiter.hit(checks.client_ip(request))
    if not decision.allowed:
        raise checks.rate_limited(decision, "conversations started")

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
    services = checks.services(request)
    project_id = v.path_uuid(request, "project_id")
    conversation_id = v.path_uuid(request, "conversation_id")
    conversation = await checks.readable_conversation(services, project_id, conversation_id)
    doc = _public_conversation(conversation)
    doc["processing"] = await processing_status(services.store, conversation_id)
    return json_response(doc)


@routes.get(PREFIX + "/projects/{project_id}/conversations/{conversation_id}/chunks")
async def list_chunks(request: web.Request) -> web.Response:
    services = checks.services(request)
    project_id = v.path_uuid(request, "project_id")
    conversation_id = v.path_uuid(request, "conversation_id")
    await checks.readable_conversation(services, project_id, conversation_id)
    return json_response(await services.store.list_chunks(conversation_id))


@routes.delete(
    PREFIX + "/projects/{project_id}/conversations/{conversation_id}/chunks/{chunk_id}"
)
async def delete_chunk(request: web.Request) -> web.Response:
    services = checks.services(request)
    project_id = v.path_uuid(request, "project_id")
    conversation_id = v.path_uuid(request, "conversation_id")
    chunk_id = v.path_uuid(request, "chunk_id")
    conversation, _ = await checks.conversation(services, conversation_id)
    if conversation["project_id"] != project_id:
        raise NotFound("Conversation not found")
    deleted = await services.store.delete_chunk(conversation_id, chunk_id)
    # Also after a repeat (404): the first attempt may have deleted the chunk and then
    # failed to publish; finalization is idempotent.
    if await services.store.is_finalizable(conversation_id):
        await _publish_finalize(request, services, conversation_id)
    if not deleted:
        raise NotFound("Chunk not found")
    return json_response(None)


@routes.post(PREFIX + "/conversations/{conversation_id}/upload-text")
async def upload_text(request: web.Request) -> web.Response:
    services = checks.services(request)
    conversation_id = v.path_uuid(request, "conversation_id")
    body = await v.read_json_object(request)
    stamp = v.timestamp(body, "timestamp")
    content = v.string(body, "content", max_len=100_000, allow_empty=False)
    source = v.string(body, "source", required=False, max_len=64, default="PORTAL_TEXT")
    await checks.conversation(services, conversation_id)
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
        await _publish_finalize(request, services, conversation_id)
    return json_response(chunk)


@routes.post(PREFIX + "/conversations/{conversation_id}/finish")
async def finish(request: web.Request) -> web.Response:
    services = checks.services(request)
    conversation_id = v.path_uuid(request, "conversation_id")
    await checks.conversation(services, conversation_id)
    try:
        result = await services.store.finish(conversation_id, "participant")
    except ConversationNotFound:
        raise NotFound("Conversation not found") from None
    if result.finalizable:
        await _publish_finalize(request, services, conversation_id)
    return json_response("OK")
