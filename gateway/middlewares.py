"""Request middlewares, outermost first: request id, metrics, errors, CORS, body limit, headers.

* request id: ``X-Request-ID`` is taken (when sane) or made, echoed back, and
  bound in every log line of the request;
* errors: :class:`ApiError` -> its status; Redis unreachable -> 503 with
  ``Retry-After``; aiohttp's HTTP exceptions -> the same JSON body; anything
  unexpected -> 500 with the request id and no traceback;
* CORS: an explicit allow-list; an allowed origin is echoed with credentials,
  preflights are answered here, other origins get no CORS headers at all;
* body limit: a declared ``Content-Length`` over the limit is refused with 413
  before the body is read (handlers that stream bodies opt out with
  :func:`streams_body`);
* security headers on every response.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import structlog
from aiohttp import web
from aiohttp.typedefs import Handler

from gateway.appkeys import HTTP_METRICS, SETTINGS
from gateway.errors import ApiError, error_body
from gateway.metrics import route_label
from storage.redis_client import REDIS_UNAVAILABLE_ERRORS

log = structlog.get_logger(__name__)

REQUEST_ID_HEADER = "X-Request-ID"
REQUEST_ID_KEY = web.RequestKey("request_id", str)
_SANE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
REDIS_RETRY_AFTER_S = 1

CORS_ALLOW_METHODS = "GET, POST, PUT, PATCH, DELETE, OPTIONS"
CORS_ALLOW_HEADERS = "Content-Type, Authorization, X-Request-ID"
CORS_EXPOSE_HEADERS = "X-Request-ID, Retry-After, RateLimit, RateLimit-Policy"
CORS_MAX_AGE_S = 600

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Resource-Policy": "same-site",
}

_F = TypeVar("_F", bound=Callable[..., Awaitable[web.StreamResponse]])
_STREAMS_BODY_ATTR = "__echo_streams_body__"


def streams_body(handler: _F) -> _F:
    """Mark a handler that reads its body as a stream and enforces its own size bound."""
    setattr(handler, _STREAMS_BODY_ATTR, True)
    return handler


def request_id_of(request: web.Request) -> str | None:
    return request.get(REQUEST_ID_KEY)


@web.middleware
async def request_id_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    incoming = request.headers.get(REQUEST_ID_HEADER, "")
    request_id = incoming if _SANE_REQUEST_ID.match(incoming) else uuid.uuid4().hex
    request[REQUEST_ID_KEY] = request_id
    with structlog.contextvars.bound_contextvars(request_id=request_id):
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            exc.headers[REQUEST_ID_HEADER] = request_id
            raise
        response.headers[REQUEST_ID_HEADER] = request_id
        return response


@web.middleware
async def metrics_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        request.app[HTTP_METRICS].observe(
            request.method, route_label(request), status, time.perf_counter() - started
        )


def _json_error(
    request: web.Request, status: int, detail: str, code: str, headers: dict[str, str] | None = None,
    **extra: Any,
) -> web.Response:
    return web.json_response(
        error_body(detail, code, request_id_of(request), **extra), status=status, headers=headers
    )


_HTTP_CODES = {
    400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
    405: "method_not_allowed", 409: "conflict", 411: "length_required",
    413: "payload_too_large", 415: "unsupported_media_type", 429: "rate_limited",
}


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        return _json_error(request, exc.status, exc.detail, exc.code, exc.headers, **exc.extra)
    except REDIS_UNAVAILABLE_ERRORS as exc:
        log.warning("redis_unavailable", error=str(exc), path=request.path)
        return _json_error(
            request, 503, "the service's data store is unavailable; retry shortly",
            "store_unavailable", {"Retry-After": str(REDIS_RETRY_AFTER_S)},
        )
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        headers = {
            k: v for k, v in exc.headers.items()
            if k.lower() not in ("content-type", "content-length")
        }
        detail = exc.reason if exc.status != 413 else "request body too large"
        return _json_error(
            request, exc.status, detail, _HTTP_CODES.get(exc.status, f"http_{exc.status}"), headers
        )
    except Exception:
        log.exception("unhandled_error", path=request.path, method=request.method)
        return _json_error(request, 500, "internal error", "internal_error")


def cors_middleware_factory(allowed_origins: tuple[str, ...]) -> Any:
    allowed = frozenset(allowed_origins)

    @web.middleware
    async def cors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        origin = request.headers.get("Origin")
        is_preflight = (
            request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers
        )
        if is_preflight:
            if origin not in allowed:
                return _json_error(request, 403, "origin not allowed", "cors_origin_not_allowed")
            return web.Response(status=204, headers={
                "Access-Control-Allow-Origin": origin,
                "Access-Control-Allow-Credentials": "true",
                "Access-Control-Allow-Methods": CORS_ALLOW_METHODS,
                "Access-Control-Allow-Headers": CORS_ALLOW_HEADERS,
                "Access-Control-Max-Age": str(CORS_MAX_AGE_S),
                "Vary": "Origin",
            })
        response = await handler(request)
        if origin is not None and origin in allowed:
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Access-Control-Allow-Credentials"] = "true"
            response.headers["Access-Control-Expose-Headers"] = CORS_EXPOSE_HEADERS
        response.headers.add("Vary", "Origin")
        return response

    return cors_middleware


@web.middleware
async def body_limit_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    limit = request.app[SETTINGS].max_body_bytes
    route_handler = getattr(request.match_info, "handler", None)
    streams = getattr(route_handler, _STREAMS_BODY_ATTR, False)
    if not streams and request.content_length is not None and request.content_length > limit:
        raise ApiError(
            f"request body too large: at most {limit} bytes", status=413, code="payload_too_large"
        )
    return await handler(request)


@web.middleware
async def security_headers_middleware(
    request: web.Request, handler: Handler
) -> web.StreamResponse:
    response = await handler(request)
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response
