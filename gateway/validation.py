"""Strict, small validation of JSON request bodies and path ids: bad input is a 400, never a 500.

Each helper takes the decoded body and a field name and returns the typed
value or raises :class:`BadRequest` whose ``detail`` names the field and the
problem, e.g. ``"filename: must be a string"``.
"""

from __future__ import annotations

import json
import re
import uuid
from datetime import datetime
from typing import Any

from aiohttp import web

from gateway.appkeys import SETTINGS
from gateway.errors import BadRequest, PayloadTooLarge

_MISSING = object()


async def read_json_object(request: web.Request, *, required: bool = True) -> dict[str, Any]:
    """The body as a JSON object; an empty body is ``{}`` unless ``required``."""
    limit = request.app[SETTINGS].max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(f"request body too large: at most {limit} bytes")
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise PayloadTooLarge(f"request body too large: at most {limit} bytes") from None
    if not raw.strip():
        if required:
            raise BadRequest("request body must be a JSON object")
        return {}
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        raise BadRequest("request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise BadRequest("request body must be a JSON object")
    return body


def _get(body: dict[str, Any], name: str, required: bool) -> Any:
    value = body.get(name, _MISSING)
    if value is _MISSING or (value is None and not required):
        if required:
            raise BadRequest(f"{name}: field required")
        return None
    if value is None:
        raise BadRequest(f"{name}: must not be null")
    return value


def string(
    body: dict[str, Any], name: str, *, required: bool = True, max_len: int = 1000,
    allow_empty: bool = True, default: str | None = None,
) -> Any:
    value = _get(body, name, required)
    if value is None:
        return default
    if not isinstance(value, str):
        raise BadRequest(f"{name}: must be a string")
    if len(value) > max_len:
        raise BadRequest(f"{name}: at most {max_len} characters")
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            # JSON may carry lone surrogates ("\ud800") that no store can encode.
            raise BadRequest(f"{name}: not valid Unicode text") from None
    if not allow_empty and not value.strip():
        raise BadRequest(f"{name}: must not be empty")
    return value


def boolean(body: dict[str, Any], name: str, *, required: bool = False) -> bool | None:
    value = _get(body, name, required)
    if value is None:
        return None
    if not isinstance(value, bool):
        raise BadRequest(f"{name}: must be true or false")
    return value


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


def uuid_field(body: dict[str, Any], name: str, *, required: bool = True) -> str | None:
    value = _get(body, name, required)
    return None if value is None else parse_uuid(value, name)


def uuid_list(body: dict[str, Any], name: str, *, max_items: int = 100) -> list[str]:
    value = _get(body, name, False)
    if value is None:
        return []
    if not isinstance(value, list):
        raise BadRequest(f"{name}: must be a list of UUIDs")
    if len(value) > max_items:
        raise BadRequest(f"{name}: at most {max_items} items")
    return list(dict.fromkeys(parse_uuid(v, name) for v in value))


def timestamp(body: dict[str, Any], name: str, *, required: bool = True) -> str | None:
    """An ISO 8601 time, returned as given (validated)."""
    value: str | None = string(body, name, required=required, max_len=64)
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value.strip())
        parsed.timestamp()
    except (ValueError, OverflowError, OSError):
        raise BadRequest(f"{name}: must be an ISO 8601 time") from None
    return value.strip()


def language_tag(body: dict[str, Any], name: str = "language", *, required: bool = False) -> str | None:
    """A language tag such as ``en`` or ``nl-BE``."""
    value: str | None = string(body, name, required=required, max_len=16, allow_empty=False)
    if value is not None and not all(c.isascii() and (c.isalnum() or c == "-") for c in value):
        raise BadRequest(f"{name}: a language tag such as 'en' or 'nl-BE'")
    return value


def path_uuid(request: web.Request, name: str) -> str:
    return parse_uuid(request.match_info[name], name)
