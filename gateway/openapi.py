"""The OpenAPI 3.1 document, built from the routes the app serves (``/api/openapi.json``).

Each operation comes from the :class:`gateway.api_docs.Endpoint` its handler declared;
request and response schemas are the pydantic models' JSON Schema, so what the
document promises is what the validators check. ``fed_by`` declarations become
OpenAPI ``links`` on the feeding operation's success answer (schemathesis follows them).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from gateway.api_docs import UUID_SCHEMA, Endpoint, endpoint, schema_of, spec_of
from gateway.api_models import Error
from gateway.appkeys import OPENAPI_DOCUMENT
from gateway.responses import json_response

routes = web.RouteTableDef()

RATE_HEADERS = {
    "Retry-After": {"schema": {"type": "integer"}, "description": "seconds until a grant is possible"},
    "RateLimit-Policy": {"schema": {"type": "string"}, "description": "IETF ratelimit-headers draft"},
    "RateLimit": {"schema": {"type": "string"}, "description": "IETF ratelimit-headers draft"},
}
_PATH_PARAM = re.compile(r"{(\w+)}")


def _json(
    schema: Mapping[str, Any], description: str, media_type: str = "application/json"
) -> dict[str, Any]:
    return {"description": description, "content": {media_type: {"schema": schema}}}


def _operation(path: str, spec: Endpoint, schemas: dict[str, Any]) -> dict[str, Any]:
    op: dict[str, Any] = {"operationId": spec.operation_id, "summary": spec.summary,
                          "tags": list(spec.tags)}
    params = [
        {"name": name, "in": "path", "required": True,
         "schema": dict(spec.path.get(name, UUID_SCHEMA))}
        for name in _PATH_PARAM.findall(path)
    ] + [
        {"name": name, "in": "query", "required": bool(param.get("required", False)),
         "schema": dict(param["schema"])}
        for name, param in spec.query.items()
    ]
    if params:
        op["parameters"] = params
    if spec.body is not None or spec.body_schema is not None:
        body_schema = (schema_of(spec.body, schemas, "request") if spec.body is not None
                       else dict(spec.body_schema or {}))
        media: dict[str, Any] = {"schema": body_schema}
        if spec.body_encoding:
            media["encoding"] = dict(spec.body_encoding)
        op["requestBody"] = {"required": spec.body_required,
                             "content": {spec.body_media_type: media}}
    responses: dict[str, Any] = {}
    for status, annotation in spec.responses.items():
        responses[str(status)] = _json(
            schema_of(annotation, schemas, "response"), "OK", spec.media_type)
        if spec.headers:
            responses[str(status)]["headers"] = {
                name: {"schema": {"type": "string"}, "description": text}
                for name, text in spec.headers.items()
            }
    error_ref = schema_of(Error, schemas, "response")
    errors = dict(spec.errors)
    if spec.body is not None:
        errors.setdefault(415, "the body is not JSON")
    for status, description in sorted(errors.items()):
        responses[str(status)] = _json(error_ref, description)
        if status == 429:
            responses[str(status)]["headers"] = RATE_HEADERS
    op["responses"] = responses
    if spec.host:
        op["security"] = [{"bearer": []}]
    return op


def _add_links(paths: dict[str, Any], specs: list[tuple[str, str, Endpoint]]) -> None:
    by_id = {spec.operation_id: paths[path][method] for path, method, spec in specs}
    for path, _, spec in specs:
        names = set(_PATH_PARAM.findall(path))
        for feed in spec.fed_by:
            producer = by_id.get(feed.operation)
            parameters = {k: v for k, v in feed.parameters.items() if k in names}
            if producer is None or not (parameters or feed.body):
                continue
            success = next(s for s in sorted(producer["responses"]) if s.startswith("2"))
            link: dict[str, Any] = {"operationId": spec.operation_id, "parameters": parameters}
            if feed.body:
                link["requestBody"] = dict(feed.body)  # merged into a generated body
            producer["responses"][success].setdefault("links", {})[spec.operation_id] = link


def build_document(app: web.Application) -> dict[str, Any]:
    """The document of every documented route of ``app``."""
    schemas: dict[str, Any] = {}
    paths: dict[str, Any] = {}
    specs: list[tuple[str, str, Endpoint]] = []
    for route in app.router.routes():
        spec = spec_of(route.handler)
        if spec is None or route.method in ("HEAD", "OPTIONS"):
            continue
        info = route.resource.get_info() if route.resource else {}
        path = info.get("path") or info.get("formatter")
        if not isinstance(path, str):
            continue
        method = route.method.lower()
        paths.setdefault(path, {})[method] = _operation(path, spec, schemas)
        specs.append((path, method, spec))
    _add_links(paths, specs)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "echo-gateway", "version": "0.1.0",
            "description": "Participant API of the Echo platform (see CONTRACT.md) and the host API.",
        },
        "paths": paths,
        "components": {
            "schemas": dict(sorted(schemas.items())),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


@routes.get("/api/openapi.json")
@endpoint("This document", tags=["ops"], responses={200: {"type": "object"}})
async def openapi_json(request: web.Request) -> web.Response:
    return json_response(request.app[OPENAPI_DOCUMENT])


async def keep_document(app: web.Application) -> None:
    """``on_startup``: the routes cannot change any more, so the document is built once."""
    app[OPENAPI_DOCUMENT] = build_document(app)
