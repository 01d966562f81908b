"""The OpenAPI 3.1 document of every route, served at ``/api/openapi.json``.

A test compares the document's operations with the app's router, both ways,
so a route cannot be added without being described (or the reverse).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from aiohttp import web

from events.catalogue import STREAMS
from gateway.responses import json_response

routes = web.RouteTableDef()

P = "/api/participant"
H = "/api/host"

UUID = {"type": "string", "format": "uuid"}
STR = {"type": "string"}
OPT_STR = {"type": ["string", "null"]}
BOOL = {"type": "boolean"}
TIME = {"type": "string", "format": "date-time"}
OPT_TIME = {"type": ["string", "null"], "format": "date-time"}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _obj(props: dict[str, Any], required: list[str] | None = None, extra: bool = True) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": props}
    if required:
        schema["required"] = required
    if not extra:
        schema["additionalProperties"] = False
    return schema


def _json(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _err(description: str) -> dict[str, Any]:
    return _json(_ref("Error"), description)


def _body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def _param(name: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": schema or UUID}


RATE_HEADERS = {
    "Retry-After": {"schema": {"type": "integer"}, "description": "seconds until a grant is possible"},
    "RateLimit-Policy": {"schema": STR, "description": "IETF httpapi ratelimit-headers draft"},
    "RateLimit": {"schema": STR, "description": "IETF httpapi ratelimit-headers draft"},
}
TOO_MANY = {**_err("over the rate limit"), "headers": RATE_HEADERS}
COMMON_ERRORS = {"400": _err("invalid input"), "404": _err("unknown id"),
                 "413": _err("body too large"), "503": _err("data store unavailable")}
WRITE_ERRORS = {**COMMON_ERRORS, "403": _err("Conversation not open for participation")}
INT = {"type": "integer"}
STREAM = {"type": "string", "enum": list(STREAMS)}
DEAD_LETTER_ID = {"type": "string", "pattern": r"^\d+-\d+$"}
HOST_ERRORS = {"400": _err("invalid input"), "401": _err("missing or wrong host token"),
               "404": _err("unknown id"), "503": _err("data store unavailable")}


def _op(summary: str, responses: dict[str, Any], *, params: Sequence[str] = (),
        body: dict[str, Any] | None = None, tags: list[str] | None = None, host: bool = False,
        extra_params: Sequence[dict[str, Any]] = ()) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "responses": responses}
    parameters = [_param(p) for p in params] + list(extra_params)
    if parameters:
        op["parameters"] = parameters
    if body is not None:
        op["requestBody"] = body
    if tags:
        op["tags"] = tags
    if host:
        op["security"] = [{"bearer": []}]
    return op


#: What a host sets on a project and reads back alike.
PROJECT_SETTINGS: dict[str, Any] = {
    "is_conversation_allowed": BOOL, "is_get_reply_enabled": BOOL, "is_verify_enabled": BOOL,
    "is_verify_on_finish_enabled": BOOL, "default_conversation_tutorial_slug": OPT_STR,
    "default_conversation_title": OPT_STR, "default_conversation_description": OPT_STR,
    "default_conversation_finish_text": OPT_STR,
    "default_conversation_ask_for_participant_name": BOOL,
    "conversation_ask_for_participant_name_label": OPT_STR,
}

SCHEMAS: dict[str, Any] = {
    "Error": _obj({"detail": STR, "code": STR, "request_id": STR}, ["detail"]),
    "Tag": _obj({"id": UUID, "text": STR}, ["id", "text"]),
    "Project": _obj({
        "id": UUID, "language": STR, "tags": {"type": "array", "items": _ref("Tag")},
        **PROJECT_SETTINGS,
    }, ["id", "language", "tags", "is_conversation_allowed"]),
    "ProjectInput": _obj({
        "name": OPT_STR, "language": STR,
        "tags": {"type": "array", "items": {"oneOf": [STR, _obj({"id": UUID, "text": STR}, ["text"])]}},
        **PROJECT_SETTINGS,
    }, extra=False),
    "Conversation": _obj({
        "id": UUID, "project_id": UUID, "title": OPT_STR, "description": OPT_STR,
        "participant_name": OPT_STR, "participant_email": OPT_STR, "source": OPT_STR,
        "tags": {"type": "array", "items": _ref("Tag")}, "created_at": TIME, "updated_at": TIME,
        "last_chunk_at": OPT_TIME, "is_finished": BOOL, "finished_at": OPT_TIME,
        "is_all_chunks_transcribed": BOOL, "finalized_at": OPT_TIME, "summary": OPT_STR,
        "status": {"enum": ["open", "finished", "finalized"]},
        "processing_status": {"enum": ["open", "finished", "finalized"]},
        "processing": _ref("Processing"),
    }, ["id", "project_id", "is_finished", "is_all_chunks_transcribed", "summary"]),
    "Processing": _obj({
        "chunks": _obj({s: {"type": "integer"} for s in (
            "pending_verification", "uploaded", "transcribing", "transcribed", "failed", "total")}),
        "finalized_at": OPT_TIME,
        "finalizations": {"type": "integer"},
        "transcript": {"type": ["object", "null"], "properties": {
            "json_key": STR, "text_key": STR}},
        "summary": _obj({"requested": BOOL, "ready": BOOL, "location": OPT_STR}),
    }),
    "Chunk": _obj({
        "id": UUID, "conversation_id": UUID, "path": OPT_STR, "transcript": OPT_STR,
        "timestamp": OPT_STR, "source": OPT_STR, "content_type": OPT_STR, "filename": OPT_STR,
        "status": {"enum": ["issued", "pending_verification", "uploaded", "transcribing",
                            "transcribed", "failed"]},
        "error": OPT_STR, "size": {"type": ["integer", "null"]},
    }, ["id", "conversation_id", "status"]),
    "InitiateRequest": _obj({
        "name": STR, "pin": {}, "conversation_id": {}, "email": OPT_STR, "user_agent": OPT_STR,
        "tag_id_list": {"type": ["array", "null"], "items": UUID}, "source": OPT_STR,
        "visitor_id": OPT_STR,
    }, ["name"]),
    "UploadUrlRequest": _obj({"filename": STR, "content_type": STR, "conversation_id": UUID},
                             ["filename", "content_type"]),
    "UploadUrlResponse": _obj({
        "chunk_id": UUID, "upload_url": STR,
        "fields": {"type": "object", "additionalProperties": STR}, "file_url": STR,
    }, ["chunk_id", "upload_url", "fields", "file_url"]),
    "ConfirmRequest": _obj({"chunk_id": UUID, "file_url": STR, "timestamp": TIME, "source": STR},
                           ["chunk_id", "file_url", "timestamp"]),
    "ConfirmResponse": _obj({
        "status": {"enum": ["confirmed", "pending_verification", "failed"]}, "chunk_id": UUID,
        "error": OPT_STR,
    }, ["status", "chunk_id"]),
    "UploadTextRequest": _obj({"timestamp": TIME, "content": STR, "source": STR},
                              ["timestamp", "content"]),
    "Telemetry": _obj({
        "state": STR, "audio_level": {"type": "number"}, "recorded_seconds": {"type": "number"},
        "client_ts": STR, "network": {}, "battery": {},
    }),
    "Ok": _obj({"ok": BOOL}, ["ok"]),
    "AutoSelectRequest": _obj({"query": STR, "language": OPT_STR}, ["query"], extra=False),
    "AutoSelectAccepted": _obj({"job_id": STR, "status": STR, "status_url": STR},
                               ["job_id", "status_url"]),
    "Job": _obj({
        "job_id": STR, "kind": STR, "status": {"enum": ["queued", "running", "completed"]},
        "project_id": STR, "query": STR, "language": OPT_STR, "provider": OPT_STR, "model": OPT_STR,
        "batches_total": {"type": ["integer", "null"]}, "batches_done": {"type": "integer"},
        "selected_conversation_ids": {"type": "array", "items": STR},
        "errors": {"type": "array", "items": _obj({"batch": {"type": "integer"}, "error": STR})},
        "dropped_ids": {"type": "array", "items": STR},
        "created_at": {"type": ["number", "null"]}, "started_at": {"type": ["number", "null"]},
        "finished_at": {"type": ["number", "null"]}, "note": STR,
    }, ["job_id", "status", "batches_done", "selected_conversation_ids", "errors"]),
    "BacklogRow": _obj({
        "stream": STR, "group": STR, "length": INT, "lag": {"type": ["integer", "null"]},
        "pending": INT, "oldest_pending_age_s": {"type": "number"}, "consumers": INT,
        "dead_letters": INT, "delayed": INT,
        "lag_source": {"enum": ["redis", "counted", "capped", ""]},
    }, ["stream", "group", "length", "lag", "pending", "dead_letters"]),
    "DeadLetter": _obj({
        "id": STR, "stream": STR, "original_id": STR, "group": STR, "reason": STR,
        "last_error": STR, "deliveries": INT, "attempts": INT, "dead_at_ms": INT, "type": STR,
        "event_id": STR, "idempotency_key": STR, "payload": {},
    }, ["id", "stream", "original_id", "reason", "last_error", "deliveries", "attempts"]),
    "StuckItem": _obj({
        "kind": {"enum": ["conversation", "chunk"]}, "conversation_id": UUID,
        "chunk_id": {"type": ["string", "null"]}, "status": STR, "age_s": {"type": "number"},
        "bound_s": {"type": "number"}, "actions": {"type": "array", "items": STR},
    }, ["kind", "conversation_id", "status", "actions"]),
    "StuckReport": _obj({
        "dry_run": BOOL, "examined": {"type": "integer"}, "complete": BOOL, "errors": {"type": "integer"},
        "duration_s": {"type": "number"}, "stuck_conversations": {"type": "integer"},
        "stuck_chunks": {"type": "integer"}, "items": {"type": "array", "items": _ref("StuckItem")},
    }, ["dry_run", "examined", "complete", "items"]),
    "RecoverResult": _obj({
        "conversation_id": UUID, "was_finalized": BOOL, "is_finished": BOOL,
        "open_chunks": {"type": "integer"}, "actions": {"type": "array", "items": STR},
        "items": {"type": "array", "items": _ref("StuckItem")},
    }, ["conversation_id", "actions", "items"]),
    "UploadChunkForm": _obj({"chunk": {"type": "string", "contentMediaType": "audio/*"},
                             "timestamp": TIME, "source": STR}, ["chunk"]),
}

PATHS: dict[str, Any] = {
    "/healthz": {"get": _op("Liveness", {"200": _json({"type": "object"})}, tags=["ops"])},
    "/readyz": {"get": _op("Readiness (Redis and S3 reachable)", {
        "200": _json({"type": "object"}), "503": _json({"type": "object"}, "not ready")}, tags=["ops"])},
    "/metrics": {"get": _op("Prometheus metrics", {"200": {
        "description": "text exposition", "content": {"text/plain": {"schema": STR}}}}, tags=["ops"])},
    "/api/openapi.json": {"get": _op("This document", {"200": _json({"type": "object"})}, tags=["ops"])},
    P + "/projects/{project_id}": {"get": _op(
        "A project as the portal sees it", {"200": _json(_ref("Project")), **COMMON_ERRORS},
        params=["project_id"], tags=["participant"])},
    P + "/projects/{project_id}/conversations/initiate": {"post": _op(
        "Start a conversation", {"200": _json(_ref("Conversation")), **WRITE_ERRORS, "429": TOO_MANY},
        params=["project_id"], body=_body(_ref("InitiateRequest")), tags=["participant"])},
    P + "/projects/{project_id}/conversations/{conversation_id}": {"get": _op(
        "A conversation (readable even when the project is closed)",
        {"200": _json(_ref("Conversation")), **COMMON_ERRORS},
        params=["project_id", "conversation_id"], tags=["participant"])},
    P + "/projects/{project_id}/conversations/{conversation_id}/chunks": {"get": _op(
        "Listed chunks by timestamp", {"200": _json({"type": "array", "items": _ref("Chunk")}),
                                       **COMMON_ERRORS},
        params=["project_id", "conversation_id"], tags=["participant"])},
    P + "/projects/{project_id}/conversations/{conversation_id}/chunks/{chunk_id}": {"delete": _op(
        "Delete a chunk", {"200": _json({"type": "null"}), **WRITE_ERRORS},
        params=["project_id", "conversation_id", "chunk_id"], tags=["participant"])},
    P + "/conversations/{conversation_id}/get-upload-url": {"post": _op(
        "A presigned POST for one chunk (40 per 60 s per conversation)",
        {"200": _json(_ref("UploadUrlResponse")), **WRITE_ERRORS, "429": TOO_MANY},
        params=["conversation_id"], body=_body(_ref("UploadUrlRequest")), tags=["participant"])},
    P + "/conversations/{conversation_id}/confirm-upload": {"post": _op(
        "Confirm an uploaded chunk (idempotent by chunk_id)",
        {"200": _json(_ref("ConfirmResponse")), "202": _json(_ref("ConfirmResponse"), "pending verification"),
         **WRITE_ERRORS},
        params=["conversation_id"], body=_body(_ref("ConfirmRequest")), tags=["participant"])},
    P + "/conversations/{conversation_id}/upload-text": {"post": _op(
        "A text chunk (deduplicated by content and timestamp)",
        {"200": _json(_ref("Chunk")), **WRITE_ERRORS},
        params=["conversation_id"], body=_body(_ref("UploadTextRequest")), tags=["participant"])},
    P + "/conversations/{conversation_id}/check-s3": {"post": _op(
        "A presigned PUT probe (text/plain, about 60 s)",
        {"200": _json(_obj({"probe_url": STR}, ["probe_url"])), **WRITE_ERRORS},
        params=["conversation_id"], tags=["participant"])},
    P + "/conversations/{conversation_id}/upload-chunk": {"post": _op(
        "Legacy upload through the gateway (streamed to S3)",
        {"200": _json(_ref("Chunk")), **WRITE_ERRORS, "429": TOO_MANY},
        params=["conversation_id"],
        body={"required": True, "content": {"multipart/form-data": {"schema": _ref("UploadChunkForm")}}},
        tags=["participant"])},
    P + "/conversations/{conversation_id}/finish": {"post": _op(
        "Finish the conversation (idempotent)", {"200": _json({"const": "OK"}), **WRITE_ERRORS},
        params=["conversation_id"], tags=["participant"])},
    P + "/conversations/{conversation_id}/ping": {"post": _op(
        "Recording telemetry (kept briefly)", {"200": _json(_ref("Ok")), **COMMON_ERRORS, "429": TOO_MANY},
        params=["conversation_id"],
        body={"required": False, "content": {"application/json": {"schema": _ref("Telemetry")}}},
        tags=["participant"])},
    P + "/projects/{project_id}/visitors/{visitor_id}/ping": {"post": _op(
        "Visitor telemetry (kept briefly)", {"200": _json(_ref("Ok")), **COMMON_ERRORS, "429": TOO_MANY},
        params=["project_id"], extra_params=[_param("visitor_id", {"type": "string", "maxLength": 128})],
        body={"required": False, "content": {"application/json": {"schema": _ref("Telemetry")}}},
        tags=["participant"])},
    H + "/projects": {
        "get": _op("All projects", {"200": _json({"type": "array", "items": _ref("Project")}),
                                    **HOST_ERRORS}, tags=["host"], host=True),
        "post": _op("Create a project", {"201": _json(_ref("Project"), "created"), **HOST_ERRORS},
                    body=_body(_ref("ProjectInput")), tags=["host"], host=True),
    },
    H + "/projects/{project_id}": {
        "get": _op("A project", {"200": _json(_ref("Project")), **HOST_ERRORS},
                   params=["project_id"], tags=["host"], host=True),
        "patch": _op("Update a project", {"200": _json(_ref("Project")), **HOST_ERRORS},
                     params=["project_id"], body=_body(_ref("ProjectInput")), tags=["host"], host=True),
    },
    H + "/projects/{project_id}/conversations": {"get": _op(
        "A project's conversations with status",
        {"200": _json({"type": "array", "items": _ref("Conversation")}), **HOST_ERRORS},
        params=["project_id"], tags=["host"], host=True)},
    H + "/conversations/{conversation_id}": {"get": _op(
        "A conversation with chunks, merged transcript and summary",
        {"200": _json({"allOf": [_ref("Conversation"), _obj({
            "merged_transcript": OPT_STR, "chunks": {"type": "array", "items": _ref("Chunk")}})]}),
         **HOST_ERRORS},
        params=["conversation_id"], tags=["host"], host=True)},
    "/api/projects/{project_id}/auto-select": {"post": _op(
        "Ask which of a project's conversations answer a question (an LLM job, batch by batch)",
        {"202": _json(_ref("AutoSelectAccepted"), "job queued"), **HOST_ERRORS},
        params=["project_id"], extra_params=[], body=_body(_ref("AutoSelectRequest")),
        tags=["host"], host=True)},
    "/api/jobs/{job_id}": {"get": _op(
        "An auto-select job's progress and merged selection",
        {"200": _json(_ref("Job")), **HOST_ERRORS},
        params=[], extra_params=[_param("job_id", STR)], tags=["host"], host=True)},
    # Recovery (gateway/admin_recovery.py)
    "/api/admin/stuck": {"get": _op(
        "What a stuck-work sweep would find now (a dry run; nothing changes)",
        {"200": _json(_ref("StuckReport")), **HOST_ERRORS},
        extra_params=[{"name": "limit", "in": "query", "required": False,
                       "schema": {"type": "integer", "minimum": 1, "maximum": 10_000}}],
        tags=["admin"], host=True)},
    "/api/admin/conversations/{conversation_id}/recover": {"post": _op(
        "Re-drive a conversation's stuck work now (idempotent); what was done",
        {"200": _json(_ref("RecoverResult")), **HOST_ERRORS},
        params=["conversation_id"], tags=["admin"], host=True)},
}

A = "/api/admin"
_QUERY = {"in": "query", "required": False}
#: The admin API of streams and dead letters (gateway/admin_streams.py).
ADMIN_STREAMS_PATHS: dict[str, Any] = {
    A + "/streams": {"get": _op(
        "Backlog figures of every stream and group (as `echo-gateway backlog --json`)",
        {"200": _json(_obj({"streams": {"type": "array", "items": _ref("BacklogRow")}},
                           ["streams"])), **HOST_ERRORS}, tags=["admin"], host=True)},
    A + "/dead-letters": {"get": _op(
        "One page of a stream's dead letters, oldest first",
        {"200": _json(_obj({"stream": STR, "dead_letters": {
            "type": "array", "items": _ref("DeadLetter")}, "next_after": OPT_STR},
            ["stream", "dead_letters", "next_after"])), **HOST_ERRORS},
        extra_params=[{"name": "stream", **_QUERY, "required": True, "schema": STREAM},
                      {"name": "count", **_QUERY,
                       "schema": {"type": "integer", "minimum": 1, "maximum": 500}},
                      {"name": "after", **_QUERY, "schema": DEAD_LETTER_ID}],
        tags=["admin"], host=True)},
    A + "/dead-letters/{stream}/{letter_id}/replay": {"post": _op(
        "Re-publish a dead letter's event and remove the letter, atomically (handled once)",
        {"200": _json(_obj({"stream": STR, "id": STR, "replayed_as": STR},
                           ["stream", "id", "replayed_as"])),
         **HOST_ERRORS, "409": _err("the letter holds no event")},
        extra_params=[_param("stream", STREAM), _param("letter_id", STR)],
        tags=["admin"], host=True)},
    A + "/dead-letters/{stream}/{letter_id}": {"delete": _op(
        "Remove one dead letter",
        {"200": _json(_obj({"stream": STR, "id": STR, "dropped": BOOL},
                           ["stream", "id", "dropped"])), **HOST_ERRORS},
        extra_params=[_param("stream", STREAM), _param("letter_id", STR)],
        tags=["admin"], host=True)},
}
PATHS.update(ADMIN_STREAMS_PATHS)

DOCUMENT: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "echo-gateway",
        "version": "0.1.0",
        "description": "Participant API of the Echo platform (see CONTRACT.md), the host API and "
                       "the admin API.",
    },
    "paths": PATHS,
    "components": {
        "schemas": SCHEMAS,
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
    },
}


@routes.get("/api/openapi.json")
async def openapi_json(request: web.Request) -> web.Response:
    return json_response(DOCUMENT)
