"""Path ids and free-form JSON bodies: bad input is a 400, never a 500.

Typed bodies are pydantic models (:mod:`gateway.api_models`), read by
:func:`gateway.api_docs.endpoint`; what is left here is for path parameters and
bodies that have no fixed shape (telemetry).
"""

from __future__ import annotations

import re
import uuid
from typing import Any

import orjson
from aiohttp import web

from gateway.api_docs import read_body
from gateway.errors import BadRequest


async def read_json_object(request: web.Request, *, required: bool = True) -> dict[str, Any]:
    """The body as a JSON object; an empty body is ``{}`` unless ``required``."""
    raw = await read_body(request)
    if not raw.strip():
        if required:
            raise BadRequest("request body must be a JSON object")
        return {}
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise BadRequest("request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise BadRequest("request body must be a JSON object")
    return body


_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\Z")


def parse_uuid(value: Any, name: str) -> str:
    """The canonical (lower-case, hyphenated) form of a UUID string, else 400."""
    if not isinstance(value, str) or len(value) > 64:
        raise BadRequest(f"{name}: must be a UUID string")
    if _CANONICAL_UUID.match(value):
        return value  # already what str(uuid.UUID(value)) would give
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise BadRequest(f"{name}: must be a UUID") from None


def path_uuid(request: web.Request, name: str) -> str:
    return parse_uuid(request.match_info[name], name)
