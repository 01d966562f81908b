"""Routes declare their bodies once; validation and ``/api/openapi.json`` come from that.

How to document a route (the document is built from the routes the app serves, and
tests/test_api_openapi.py fails on a served route without ``@endpoint``):

1. Declare the JSON request body as a model in :mod:`gateway.api_models`
   (``StrictRequest``: extras refused; ``TolerantRequest``: extras ignored) and the
   success body as a plain pydantic model there, or give the dataclass the handler
   answers with (``asdict``) itself: pydantic derives a schema from either.
2. Put ``@endpoint`` under the route decorator::

       @routes.post("/api/admin/things/{thing_id}")
       @endpoint("Do a thing", tags=["admin"], host=True, body=ThingRequest,
                 responses={200: Thing}, errors=HOST_ERRORS)
       async def do_thing(request: web.Request, body: ThingRequest) -> web.Response: ...

   With ``body=`` the handler gets the validated model (bad JSON or field: 400 ``"field:
   problem"``; a body not declared JSON: 415); without, it takes only the request.
   ``host=True`` checks the host token (401) before anything else. Path parameters are
   UUIDs unless ``path=`` says otherwise; ``query=`` documents query parameters; ``fed_by=[Feed(operation_id, {...})]`` names
   the operations whose answers hold the ids (OpenAPI links, for the fuzzer's stateful
   phase). Operation ids are ``<first tag>_<handler name>``.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, is_dataclass
from typing import Any, TypeVar, overload

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from pydantic import BaseModel, TypeAdapter, ValidationError

from gateway.appkeys import SETTINGS
from gateway.auth import require_host
from gateway.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType

M = TypeVar("M", bound=BaseModel)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
BodyHandler = Callable[[web.Request, M], Awaitable[web.StreamResponse]]

_SPEC_ATTR = "__echo_endpoint__"

#: The usual error answers (status -> description), for ``errors=``.
COMMON_ERRORS = {400: "invalid input", 404: "unknown id", 413: "body too large",
                 503: "data store unavailable"}
WRITE_ERRORS = {**COMMON_ERRORS, 403: "Conversation not open for participation"}
HOST_ERRORS = {**COMMON_ERRORS, 401: "missing or wrong host token"}
RATE_LIMITED = {429: "over the rate limit"}

UUID_SCHEMA: dict[str, Any] = {"type": "string", "format": "uuid"}


@dataclass(frozen=True)
class Feed:
    """Ids for this operation come from ``operation``'s success answer: ``parameters`` maps a
    path parameter, ``body`` a body field, to a runtime expression such as
    ``$response.body#/id``."""

    operation: str
    parameters: Mapping[str, str]
    body: Mapping[str, str] = field(default_factory=dict)


#: Links most operations take: a project's id from its creation, a conversation's from
#: ``initiate``.
FROM_PROJECT = Feed("host_create_project", {"project_id": "$response.body#/id"})
FROM_INITIATE_CONVERSATION = Feed(
    "participant_initiate", {"conversation_id": "$response.body#/id"})


@dataclass(frozen=True)
class Endpoint:
    """What the document says of one operation."""

    summary: str
    tags: Sequence[str]
    responses: Mapping[int, Any]
    errors: Mapping[int, str] = field(default_factory=dict)
    body: type[BaseModel] | None = None
    body_required: bool = True
    #: The request body's schema when it is not ``body`` (multipart, free-form JSON).
    body_schema: Mapping[str, Any] | None = None
    body_media_type: str = "application/json"
    #: The media type object's ``encoding`` (multipart parts' content types).
    body_encoding: Mapping[str, Any] = field(default_factory=dict)
    host: bool = False
    path: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    #: Query parameters: name -> ``{"schema": ..., "required"?: bool}`` (the handler checks them).
    query: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    fed_by: Sequence[Feed] = ()
    operation_id: str = ""
    #: Headers of the success answer (name -> description).
    headers: Mapping[str, str] = field(default_factory=dict)
    #: The media type of the success answers.
    media_type: str = "application/json"


def spec_of(handler: object) -> Endpoint | None:
    """The :class:`Endpoint` a handler was declared with, if any."""
    spec = getattr(handler, _SPEC_ATTR, None)
    return spec if isinstance(spec, Endpoint) else None


@overload
def endpoint(
    summary: str, *, tags: Sequence[str], responses: Mapping[int, Any], body: type[M],
    errors: Mapping[int, str] = ..., host: bool = ..., path: Mapping[str, Mapping[str, Any]] = ...,
    query: Mapping[str, Mapping[str, Any]] = ...,
    fed_by: Sequence[Feed] = ..., operation_id: str = ..., headers: Mapping[str, str] = ...,
    media_type: str = ...,
) -> Callable[[BodyHandler[M]], Handler]: ...


@overload
def endpoint(
    summary: str, *, tags: Sequence[str], responses: Mapping[int, Any], body: None = ...,
    errors: Mapping[int, str] = ..., host: bool = ..., path: Mapping[str, Mapping[str, Any]] = ...,
    query: Mapping[str, Mapping[str, Any]] = ...,
    fed_by: Sequence[Feed] = ..., operation_id: str = ..., headers: Mapping[str, str] = ...,
    body_schema: Mapping[str, Any] | None = ..., body_media_type: str = ...,
    body_required: bool = ..., media_type: str = ..., body_encoding: Mapping[str, Any] = ...,
) -> Callable[[Handler], Handler]: ...


def endpoint(
    summary: str, *, tags: Sequence[str], responses: Mapping[int, Any],
    body: type[BaseModel] | None = None, errors: Mapping[int, str] | None = None,
    host: bool = False, path: Mapping[str, Mapping[str, Any]] | None = None,
    query: Mapping[str, Mapping[str, Any]] | None = None,
    fed_by: Sequence[Feed] = (), operation_id: str = "", headers: Mapping[str, str] | None = None,
    body_schema: Mapping[str, Any] | None = None, body_media_type: str = "application/json",
    body_required: bool = True, media_type: str = "application/json",
    body_encoding: Mapping[str, Any] | None = None,
) -> Callable[[Any], Handler]:
    """Declare a handler's operation (see the module docstring)."""

    def decorate(handler: Any) -> Handler:
        spec = Endpoint(
            summary=summary, tags=tuple(tags), responses=dict(responses), errors=dict(errors or {}),
            body=body, body_required=body_required, body_schema=body_schema,
            body_media_type=body_media_type, host=host, path=dict(path or {}), query=dict(query or {}),
            fed_by=tuple(fed_by), operation_id=operation_id or f"{tags[0]}_{handler.__name__}",
            headers=dict(headers or {}), media_type=media_type,
            body_encoding=dict(body_encoding or {}),
        )
        wrapped: Handler
        if body is None and not host:
            wrapped = handler
        else:
            model = body

            @functools.wraps(handler)
            async def checked(request: web.Request) -> web.StreamResponse:
                if host:
                    require_host(request)  # 401 before the body says anything
                response: web.StreamResponse
                if model is None:
                    response = await handler(request)
                else:
                    _check_json_content_type(request)
                    response = await handler(request, parse_body(model, await read_body(request)))
                return response

            wrapped = checked
        setattr(wrapped, _SPEC_ATTR, spec)
        return wrapped

    return decorate


def _check_json_content_type(request: web.Request) -> None:
    """415 unless the body is declared JSON (``application/json``, ``*/*+json``) or not
    declared at all (clients that send no ``Content-Type`` are read as JSON, as before)."""
    if "Content-Type" not in request.headers:
        return
    media_type = request.content_type
    if media_type != "application/json" and not media_type.endswith("+json"):
        raise UnsupportedMediaType(
            f"request body must be application/json, not {media_type[:100]!r}")


async def read_body(request: web.Request) -> bytes:
    """The raw body, at most the configured limit (413 beyond it)."""
    limit = request.app[SETTINGS].max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(f"request body too large: at most {limit} bytes")
    try:
        return await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise PayloadTooLarge(f"request body too large: at most {limit} bytes") from None
    except (HttpProcessingError, ConnectionResetError):
        # Broken chunked framing, or a body that ended before its Content-Length.
        raise BadRequest("request body is malformed or ended early", code="malformed_body") from None


def parse_body(model: type[M], raw: bytes) -> M:
    """``raw`` JSON as ``model``; a 400 naming the first field at fault otherwise."""
    if not raw.strip():
        raise BadRequest("request body must be a JSON object")
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        raise BadRequest(describe(exc)) from None


def describe(exc: ValidationError) -> str:
    """``"field: problem"`` for the first error (the portal shows ``detail`` as text)."""
    error = exc.errors(include_url=False, include_context=False, include_input=False)[0]
    kind, where = error["type"], ".".join(str(part) for part in error["loc"])
    if kind == "json_invalid":
        return "request body is not valid JSON"
    if kind in ("model_type", "model_attributes_type") and not where:
        return "request body must be a JSON object"
    message = {"missing": "field required", "extra_forbidden": "unknown field",
               "string_pattern_mismatch": "not an accepted value"}.get(kind, error["msg"])
    if kind == "string_pattern_mismatch" and "content_type" in where:
        message = "must be an audio type (or video/mp4, video/webm)"
    return f"{where}: {message}" if where else message


def schema_of(annotation: Any, definitions: dict[str, Any], mode: str) -> dict[str, Any]:
    """The JSON Schema of ``annotation`` (a model or a dataclass, a list of them, or a schema
    dict), its named parts moved into ``definitions`` (``#/components/schemas``): a model or
    dataclass is named by its class, wherever it stands."""
    if isinstance(annotation, Mapping):
        return dict(annotation)
    schema = TypeAdapter(annotation).json_schema(
        ref_template="#/components/schemas/{model}",
        mode="serialization" if mode == "response" else "validation",
    )
    definitions.update(schema.pop("$defs", {}))
    if isinstance(annotation, type) and (
        issubclass(annotation, BaseModel) or is_dataclass(annotation)
    ):
        definitions[annotation.__name__] = schema
        return {"$ref": f"#/components/schemas/{annotation.__name__}"}
    return schema
