"""Admin recovery routes (``Authorization: Bearer $ADMIN_TOKEN``): what a sweep would find now,
and the manual recovery of one conversation. Registered by :func:`add_admin_recovery`."""

from __future__ import annotations

import re

from aiohttp import web

from gateway import validation as v
from gateway.admin_models import MAX_STUCK_LIMIT, STUCK_QUERY, RecoverResult, StuckReport
from gateway.api_docs import FROM_INITIATE_CONVERSATION, HOST_ERRORS, endpoint
from gateway.appkeys import RECOVERY
from gateway.errors import BadRequest, NotFound
from gateway.responses import json_response
from gateway.stuck_sweeper import recovery_ctx
from storage.conversations import ConversationNotFound

PREFIX = "/api/admin"

routes = web.RouteTableDef()


def add_admin_recovery(app: web.Application) -> None:
    """The routes and the sweeper they use (after the Redis and S3 contexts)."""
    app.cleanup_ctx.append(recovery_ctx)
    app.add_routes(routes)


def _limit(request: web.Request) -> int | None:
    raw = request.query.get("limit")
    if raw is None:
        return None
    if not re.fullmatch(r"[0-9]{1,6}", raw):
        raise BadRequest("limit: must be an integer", code="invalid_limit")
    limit = int(raw)
    if not 1 <= limit <= MAX_STUCK_LIMIT:
        raise BadRequest(f"limit: must be between 1 and {MAX_STUCK_LIMIT}", code="invalid_limit")
    return limit


@routes.get(PREFIX + "/stuck")
@endpoint("What a stuck-work sweep would find now (a dry run; nothing changes)", tags=["admin"],
          host=True, query=STUCK_QUERY, responses={200: StuckReport}, errors=HOST_ERRORS)
async def stuck(request: web.Request) -> web.Response:
    """A dry run of the sweeper from the first conversation (``limit``: conversations to
    examine, default ``STUCK_SWEEP_MAX_ITEMS``): what it would find; nothing is changed."""
    report = await request.app[RECOVERY].dry_run(_limit(request))
    return json_response(report.as_dict())


@routes.post(PREFIX + "/conversations/{conversation_id}/recover")
@endpoint("Re-drive a conversation's stuck work now (idempotent); what was done",
          tags=["admin"], host=True, responses={200: RecoverResult}, errors=HOST_ERRORS,
          fed_by=[FROM_INITIATE_CONVERSATION])
async def recover(request: web.Request) -> web.Response:
    """Re-drive one conversation now, whatever the age of its work; idempotent."""
    conversation_id = v.path_uuid(request, "conversation_id")
    try:
        result = await request.app[RECOVERY].recover_conversation(conversation_id)
    except ConversationNotFound:
        raise NotFound("Conversation not found", code="conversation_not_found") from None
    return json_response(result)
