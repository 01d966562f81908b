"""The checks every participant handler makes, in the order the package promises: ids
known (404), project open (403, reads excepted), rate-limit quota (429)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from gateway.api_services import ApiServices
from gateway.appkeys import API_SERVICES
from gateway.errors import Forbidden, NotFound, TooManyRequests
from storage.ratelimit import RateLimitDecision

PREFIX = "/api/participant"
NOT_OPEN = "Conversation not open for participation"


def services(request: web.Request) -> ApiServices:
    return request.app[API_SERVICES]


def client_ip(request: web.Request) -> str:
    """The client address for per-IP limits: behind N trusted proxies, the Nth
    X-Forwarded-For entry from the right (entries further left are client-made)."""
    address = request.remote or "unknown"
    hops = request.app[API_SERVICES].settings.trusted_proxy_hops
    if hops:
        forwarded = [
            a.strip() for a in request.headers.get("X-Forwarded-For", "").split(",") if a.strip()
        ]
        if len(forwarded) >= hops:
            address = forwarded[-hops]
    return address.replace("{", "").replace("}", "")[:64]


def rate_limited(decision: RateLimitDecision, what: str) -> TooManyRequests:
    """The 429 for a refused ``decision``, with the headers that say when to retry."""
    return TooManyRequests(
        f"too many {what}; retry in {decision.retry_after_header} s",
        headers=decision.headers(),
        extra={"retry_after_s": decision.retry_after_header},
    )


async def project(services: ApiServices, project_id: str) -> dict[str, Any]:
    """The project; 404 if unknown."""
    found = await services.store.get_project(project_id)
    if found is None:
        raise NotFound("Project not found")
    return found


async def conversation(
    services: ApiServices, conversation_id: str, *, write: bool = True
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The conversation and its project; 404 if either is unknown, 403 on a closed project
    (unless not ``write``: a conversation under way stays readable)."""
    found = await services.store.get_conversation(conversation_id)
    if found is None:
        raise NotFound("Conversation not found")
    its_project = await services.store.get_project(str(found["project_id"]))
    if its_project is None:
        raise NotFound("Conversation not found")
    if write and not its_project.get("is_conversation_allowed"):
        raise Forbidden(NOT_OPEN)
    return found, its_project


async def readable_conversation(
    services: ApiServices, project_id: str, conversation_id: str
) -> dict[str, Any]:
    """The conversation, for reading through its project's path; 404 unless it is that
    project's."""
    found, _ = await conversation(services, conversation_id, write=False)
    if found["project_id"] != project_id:
        raise NotFound("Conversation not found")
    return found
