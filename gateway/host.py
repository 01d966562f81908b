"""The host API (``/api/host``): projects and their conversations, behind ``ADMIN_TOKEN``."""

from __future__ import annotations

import uuid
from typing import Any

from aiohttp import web

from gateway import validation as v
from gateway.api_docs import FROM_INITIATE_CONVERSATION, FROM_PROJECT, HOST_ERRORS, endpoint
from gateway.api_models import Conversation as ConversationModel
from gateway.api_models import HostConversation, Project, ProjectInput, TagInput
from gateway.appkeys import API_SERVICES
from gateway.errors import NotFound
from gateway.responses import json_response
from transcription.status import processing_status

PREFIX = "/api/host"
TAGS = ["host"]

routes = web.RouteTableDef()


def _tags(
    raw: list[TagInput | str], existing: list[dict[str, Any]]
) -> list[dict[str, str]]:
    """Strings or ``{id?, text}``; kept ids survive, new texts get ids."""
    by_text = {t.get("text"): t.get("id") for t in existing}
    tags: list[dict[str, str]] = []
    for item in raw:
        tag = TagInput(text=item) if isinstance(item, str) else item
        text = tag.text.strip()
        tag_id = str(tag.id) if tag.id else by_text.get(tag.text) or by_text.get(text)
        tags.append({"id": tag_id or str(uuid.uuid4()), "text": text})
    return tags


def _project_changes(body: ProjectInput, existing_tags: list[dict[str, Any]]) -> dict[str, Any]:
    """The fields the body sets (absent ones are left alone)."""
    changes = {name: getattr(body, name) for name in body.model_fields_set}
    if "tags" in changes:
        changes["tags"] = _tags(body.tags, existing_tags)
    return changes


@routes.post(PREFIX + "/projects")
@endpoint("Create a project", tags=TAGS, host=True, body=ProjectInput, responses={201: Project},
          errors=HOST_ERRORS)
async def create_project(request: web.Request, body: ProjectInput) -> web.Response:
    changes = _project_changes(body, [])
    project = await request.app[API_SERVICES].store.create_project(changes)
    return json_response(project, status=201)


@routes.get(PREFIX + "/projects")
@endpoint("All projects", tags=TAGS, host=True, responses={200: list[Project]}, errors=HOST_ERRORS)
async def list_projects(request: web.Request) -> web.Response:
    return json_response(await request.app[API_SERVICES].store.list_projects())


@routes.get(PREFIX + "/projects/{project_id}")
@endpoint("A project", tags=TAGS, host=True, responses={200: Project}, errors=HOST_ERRORS,
          fed_by=[FROM_PROJECT])
async def get_project(request: web.Request) -> web.Response:
    project_id = v.path_uuid(request, "project_id")
    project = await request.app[API_SERVICES].store.get_project(project_id)
    if project is None:
        raise NotFound("Project not found")
    return json_response(project)


@routes.patch(PREFIX + "/projects/{project_id}")
@endpoint("Update a project", tags=TAGS, host=True, body=ProjectInput, responses={200: Project},
          errors=HOST_ERRORS, fed_by=[FROM_PROJECT])
async def update_project(request: web.Request, body: ProjectInput) -> web.Response:
    store = request.app[API_SERVICES].store
    project_id = v.path_uuid(request, "project_id")
    existing = await store.get_project(project_id)
    if existing is None:
        raise NotFound("Project not found")
    project = await store.update_project(project_id, _project_changes(body, existing.get("tags") or []))
    if project is None:
        raise NotFound("Project not found")
    return json_response(project)


@routes.get(PREFIX + "/projects/{project_id}/conversations")
@endpoint("A project's conversations with status", tags=TAGS, host=True,
          responses={200: list[ConversationModel]}, errors=HOST_ERRORS, fed_by=[FROM_PROJECT])
async def list_conversations(request: web.Request) -> web.Response:
    store = request.app[API_SERVICES].store
    project_id = v.path_uuid(request, "project_id")
    if await store.get_project(project_id) is None:
        raise NotFound("Project not found")
    conversations = await store.list_conversations(project_id)
    return json_response([
        {k: val for k, val in c.items() if k != "merged_transcript"} for c in conversations
    ])


@routes.get(PREFIX + "/conversations/{conversation_id}")
@endpoint("A conversation with chunks, merged transcript and summary", tags=TAGS, host=True,
          responses={200: HostConversation}, errors=HOST_ERRORS,
          fed_by=[FROM_INITIATE_CONVERSATION])
async def get_conversation(request: web.Request) -> web.Response:
    store = request.app[API_SERVICES].store
    conversation_id = v.path_uuid(request, "conversation_id")
    conversation = await store.get_conversation(conversation_id)
    if conversation is None:
        raise NotFound("Conversation not found")
    chunks = await store.list_chunks(conversation_id)
    processing = await processing_status(store, conversation_id)
    return json_response({**conversation, "processing": processing, "chunks": chunks})
