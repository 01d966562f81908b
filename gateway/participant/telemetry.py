"""Participant pings: cheap, rate-limited per client, kept briefly (:mod:`storage.presence`)
for the host's live view. Bad telemetry is dropped, never an error that disturbs recording."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from gateway import validation as v
from gateway.api_docs import (
    COMMON_ERRORS,
    FROM_INITIATE_CONVERSATION,
    FROM_PROJECT,
    RATE_LIMITED,
    endpoint,
)
from gateway.api_models import Ok, Telemetry
from gateway.api_services import ApiServices
from gateway.errors import BadRequest, NotFound
from gateway.participant import checks
from gateway.participant.checks import PREFIX
from gateway.responses import json_response

PING_FIELDS = ("state", "audio_level", "recorded_seconds", "client_ts", "network", "battery",
               "visibility", "mic", "error", "user_agent")

#: Visitor ids: what a Redis key and a path segment can hold (``$``: the end of the string).
VISITOR_ID_PATTERN = r"^[^{}:/ \t\r\n]+$"
_VISITOR_ID = re.compile(VISITOR_ID_PATTERN)
TAGS = ["participant"]
#: Any JSON: what is not telemetry is ignored, never refused (CONTRACT.md).
PING_BODY = {"anyOf": [Telemetry.model_json_schema(), {}],
             "description": "telemetry; any JSON is accepted and what is not telemetry ignored"}

routes = web.RouteTableDef()


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


async def _ping_record(request: web.Request, services: ApiServices) -> dict[str, Any]:
    """What to keep of this ping, once it has taken its quota (429 beyond it)."""
    telemetry = await _read_telemetry(request)
    decision = await services.ping_limiter.hit(checks.client_ip(request))
    if not decision.allowed:
        raise checks.rate_limited(decision, "pings")
    telemetry["received_at"] = datetime.now(UTC).isoformat()
    telemetry["remote"] = request.remote
    return telemetry


@routes.post(PREFIX + "/conversations/{conversation_id}/ping")
@endpoint("Recording telemetry (kept briefly)", tags=TAGS, responses={200: Ok},
          errors={**COMMON_ERRORS, **RATE_LIMITED}, body_schema=PING_BODY, body_required=False,
          fed_by=[FROM_INITIATE_CONVERSATION])
async def conversation_ping(request: web.Request) -> web.Response:
    services = checks.services(request)
    conversation_id = v.path_uuid(request, "conversation_id")
    if await services.store.conversation_gate(conversation_id) is None:
        raise NotFound("Conversation not found")
    telemetry = await _ping_record(request, services)
    await services.presence.record_conversation_ping(conversation_id, telemetry)
    return json_response({"ok": True})


@routes.post(PREFIX + "/projects/{project_id}/visitors/{visitor_id}/ping")
@endpoint("Visitor telemetry (kept briefly)", tags=TAGS, responses={200: Ok},
          errors={**COMMON_ERRORS, **RATE_LIMITED}, body_schema=PING_BODY, body_required=False,
          path={"visitor_id": {"type": "string", "minLength": 1, "maxLength": 128,
                               "pattern": VISITOR_ID_PATTERN}},
          fed_by=[FROM_PROJECT])
async def visitor_ping(request: web.Request) -> web.Response:
    services = checks.services(request)
    project_id = v.path_uuid(request, "project_id")
    visitor_id = request.match_info["visitor_id"]
    if len(visitor_id) > 128 or not _VISITOR_ID.fullmatch(visitor_id):
        raise BadRequest("visitor_id: 1 to 128 characters, no braces, colons, slashes or spaces")
    if await services.store.project_is_open(project_id) is None:
        raise NotFound("Project not found")
    telemetry = await _ping_record(request, services)
    await services.presence.record_visitor_ping(project_id, visitor_id, telemetry)
    return json_response({"ok": True})
