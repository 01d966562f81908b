"""The host API (``/api/host``): projects and their conversations, behind ``ADMIN_TOKEN``."""

from __future__ import annotations

import uuid
from typing import Any

from aiohttp import web

from gateway import validation as v
from gateway.appkeys import API_SERVICES
from gateway.auth import require_host
from gateway.errors import BadRequest, NotFound
from gateway.responses import json_response
from transcription.status import processing_status

PREFIX = "/api/host"
BOOL_FIELDS = (
    "is_conversation_allowed", "is_get_reply_enabled", "is_verify_enabled",
    "is_verify_on_finish_enabled", "default_conversation_ask_for_participant_name",
)
TEXT_FIELDS = {
    "name": 500,
    "default_conversation_tutorial_slug": 200,
    "default_conversation_title": 500,
    "default_conversation_description": 5000,
    "default_conversation_finish_text": 5000,
    "conversation_ask_for_participant_name_label": 500,
}
MAX_TAGS = 200

routes = web.RouteTableDef()


def _tags(body: dict[str, Any], existing: list[dict[str, Any]]) -> list[dict[str, str]] | None:
    """``tags``: a list of strings or ``{id?, text}``; kept ids survive, new texts get ids."""
    if "tags" not in body:
        return None
    raw = body["tags"]
    if not isinstance(raw, list) or len(raw) > MAX_TAGS:
        raise BadRequest(f"tags: must be a list of at most {MAX_TAGS} tags")
    by_text = {t.get("text"): t.get("id") for t in existing}
    tags: list[dict[str, str]] = []
    for item in raw:
        if isinstance(item, str):
            item = {"text": item}
        if not isinstance(item, dict):
            raise BadRequest("tags: each tag is a string or an object with 'text'")
        text = v.string(item, "text", max_len=200, allow_empty=False)
        tag_id = v.uuid_field(item, "id", required=False) or by_text.get(text) or str(uuid.uuid4())
        tags.append({"id": tag_id, "text": text.strip()})
    return tags


def _project_changes(body: dict[str, Any], existing_tags: list[dict[str, Any]]) -> dict[str, Any]:
    changes: dict[str, Any] = {}
    for name in BOOL_FIELDS:
        if name in body:
            changes[name] = v.boolean(body, name, required=True)
    for name, max_len in TEXT_FIELDS.items():
        if name in body:
            changes[name] = v.string(body, name, required=False, max_len=max_len)
    if "language" in body:
        changes["language"] = v.language_tag(body, required=True)
    tags = _tags(body, existing_tags)
    if tags is not None:
        changes["tags"] = tags
    unknown = sorted(set(body) - set(BOOL_FIELDS) - set(TEXT_FIELDS) - {"language", "tags"})
    if unknown:
        raise BadRequest(f"unknown fields: {', '.join(unknown)}")
    return changes


@routes.post(PREFIX + "/projects")
async def create_project(request: web.Request) -> web.Response:
    require_host(request)
    body = await v.read_json_object(request)
    changes = _project_changes(body, [])
    project = await request.app[API_SERVICES].store.create_project(changes)
    return json_response(project, status=201)


@routes.get(PREFIX + "/projects")
async def list_projects(request: web.Request) -> web.Response:
    require_host(request)
    return json_response(await request.app[API_SERVICES].store.list_projects())


@routes.get(PREFIX + "/projects/{project_id}")
async def get_project(request: web.Request) -> web.Response:
    require_host(request)
    project_id = v.path_uuid(request, "project_id")
    project = await request.app[API_SERVICES].store.get_project(project_id)
    if project is None:
        raise NotFound("Project not found")
    return json_response(project)


@routes.patch(PREFIX + "/projects/{project_id}")
async def update_project(request: web.Request) -> web.Response:
    require_host(request)
    store = request.app[API_SERVICES].store
    project_id = v.path_uuid(request, "project_id")
    body = await v.read_json_object(request)
    existing = await store.get_project(project_id)
    if existing is None:
        raise NotFound("Project not found")
    project = await store.update_project(project_id, _project_changes(body, existing.get("tags") or []))
    if project is None:
        raise NotFound("Project not found")
    return json_response(project)


@routes.get(PREFIX + "/projects/{project_id}/conversations")
async def list_conversations(request: web.Request) -> web.Response:
    require_host(request)
    store = request.app[API_SERVICES].store
    project_id = v.path_uuid(request, "project_id")
    if await store.get_project(project_id) is None:
        raise NotFound("Project not found")
    conversations = await store.list_conversations(project_id)
    return json_response([
        {k: val for k, val in c.items() if k != "merged_transcript"} for c in conversations
    ])


@routes.get(PREFIX + "/conversations/{conversation_id}")
async def get_conversation(request: web.Request) -> web.Response:
    require_host(request)
    store = request.app[API_SERVICES].store
    conversation_id = v.path_uuid(request, "conversation_id")
    conversation = await store.get_conversation(conversation_id)
    if conversation is None:
        raise NotFound("Conversation not found")
    chunks = await store.list_chunks(conversation_id)
    processing = await processing_status(store, conversation_id)
    return json_response({**conversation, "processing": processing, "chunks": chunks})
