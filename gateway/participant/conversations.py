"""Participant routes for projects, conversations, their chunk lists, text chunks and finish."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from events import catalogue as events
from events.catalogue import FinalizeRequest
from gateway import validation as v
from gateway.api_docs import (
    COMMON_ERRORS,
    FROM_PROJECT,
    RATE_LIMITED,
    WRITE_ERRORS,
    Feed,
    endpoint,
)
from gateway.api_models import (
    Chunk,
    Conversation,
    InitiateRequest,
    PublicProject,
    UploadTextRequest,
)
from gateway.api_services import ApiServices
from gateway.errors import BadRequest, Forbidden, NotFound
from gateway.middlewares import request_id_of
from gateway.participant import checks
from gateway.participant.checks import NOT_OPEN, PREFIX
from gateway.responses import json_response
from storage.conversations import ConversationNotFound
from transcription.status import processing_status

PROJECT_PUBLIC_FIELDS = tuple(PublicProject.model_fields)
TAGS = ["participant"]
#: Ids from a started conversation: its project and itself.
FROM_INITIATE = Feed("participant_initiate", {
    "project_id": "$response.body#/project_id", "conversation_id": "$response.body#/id"})

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
@endpoint("A project as the portal sees it", tags=TAGS, responses={200: PublicProject},
          errors=COMMON_ERRORS, fed_by=[FROM_PROJECT])
async def get_project(request: web.Request) -> web.Response:
    project_id = v.path_uuid(request, "project_id")
    project = await checks.project(checks.services(request), project_id)
    return json_response({k: project.get(k) for k in PROJECT_PUBLIC_FIELDS})


@routes.post(PREFIX + "/projects/{project_id}/conversations/initiate")
@endpoint("Start a conversation", tags=TAGS, body=InitiateRequest,
          responses={200: Conversation}, errors={**WRITE_ERRORS, **RATE_LIMITED},
          fed_by=[FROM_PROJECT])
async def initiate(request: web.Request, body: InitiateRequest) -> web.Response:
    services = checks.services(request)
    project_id = v.path_uuid(request, "project_id")
    name, email, source = body.name, body.email, body.source
    tag_ids = list(dict.fromkeys(str(t) for t in body.tag_id_list or ()))

    project = await checks.project(services, project_id)
    if not project.get("is_conversation_allowed"):
        raise Forbidden(NOT_OPEN)
    known_tags = {t.get("id"): t for t in project.get("tags") or [] if isinstance(t, dict)}
    unknown = [t for t in tag_ids if t not in known_tags]
    if unknown:
        raise BadRequest(
            f"tag_id_list: unknown tag ids {', '.join(unknown)}", code="unknown_tag_ids")
    decision = await services.initiate_limiter.hit(checks.client_ip(request))
    if not decision.allowed:
        raise checks.rate_limited(decision, "conversations started")

    conversation = await services.store.create_conversation(project_id, {
        "title": name,
        "description": project.get("default_conversation_description"),
        "participant_name": name,
        "participant_email": email,
        "user_agent": body.user_agent,
        "source": source or "PORTAL_AUDIO",
        "visitor_id": body.visitor_id,
        "tags": [known_tags[t] for t in tag_ids],
    })
    return json_response(_public_conversation(conversation), headers=decision.headers())


# "initiate" is not a conversation id: a GET there is a 405, as the document says.
@routes.get(PREFIX + "/projects/{project_id}/conversations/{conversation_id:(?!initiate$)[^{}/]+}")
@endpoint("A conversation (readable even when the project is closed)", tags=TAGS,
          responses={200: Conversation}, errors=COMMON_ERRORS, fed_by=[FROM_INITIATE])
async def get_conversation(request: web.Request) -> web.Response:
    services = checks.services(request)
    project_id = v.path_uuid(request, "project_id")
    conversation_id = v.path_uuid(request, "conversation_id")
    conversation = await checks.readable_conversation(services, project_id, conversation_id)
    doc = _public_conversation(conversation)
    doc["processing"] = await processing_status(services.store, conversation_id)
    return json_response(doc)


@routes.get(PREFIX + "/projects/{project_id}/conversations/{conversation_id}/chunks")
@endpoint("Listed chunks by timestamp", tags=TAGS, responses={200: list[Chunk]},
          errors=COMMON_ERRORS, fed_by=[FROM_INITIATE])
async def list_chunks(request: web.Request) -> web.Response:
    services = checks.services(request)
    project_id = v.path_uuid(request, "project_id")
    conversation_id = v.path_uuid(request, "conversation_id")
    await checks.readable_conversation(services, project_id, conversation_id)
    return json_response(await services.store.list_chunks(conversation_id))


@routes.delete(
    PREFIX + "/projects/{project_id}/conversations/{conversation_id}/chunks/{chunk_id}"
)
@endpoint("Delete a chunk", tags=TAGS, responses={200: {"type": "null"}}, errors=WRITE_ERRORS,
          fed_by=[FROM_INITIATE])
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
@endpoint("A text chunk (deduplicated by content and timestamp)", tags=TAGS,
          body=UploadTextRequest, responses={200: Chunk}, errors=WRITE_ERRORS,
          fed_by=[FROM_INITIATE])
async def upload_text(request: web.Request, body: UploadTextRequest) -> web.Response:
    services = checks.services(request)
    conversation_id = v.path_uuid(request, "conversation_id")
    stamp, content, source = body.timestamp, body.content, body.source or "PORTAL_TEXT"
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
@endpoint("Finish the conversation (idempotent)", tags=TAGS, responses={200: {"const": "OK"}},
          errors=WRITE_ERRORS, fed_by=[FROM_INITIATE])
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
