"""The request middleware: one layer, so the hot path pays for one coroutine, not four.

:func:`gateway_middleware_factory` does, outermost step first:

* request id: ``X-Request-ID`` is taken (when sane) or made, echoed back, and
  bound in every log line of the request;
* metrics: count and latency by method, route pattern and status (499: the client went
  away and aiohttp cancelled the handler);
* CORS: an explicit allow-list; an allowed origin is echoed with credentials,
  preflights are answered here, other origins get no CORS headers at all;
* security headers on every response but preflight answers;
* body limit: a declared ``Content-Length`` over the limit is refused with 413
  before the body is read (handlers that stream bodies opt out with
  :func:`streams_body`);
* errors: :class:`ApiError` -> its status; Redis unreachable -> 503 with
  ``Retry-After``; aiohttp's HTTP exceptions -> the same JSON body; anything
  unexpected -> 500 with the request id and no traceback. Error answers get the
  CORS and security headers like any other; an HTTP exception raised through
  (a redirect) gets only the request id.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import structlog
from aiohttp import web
from aiohttp.typedefs import Handler

from gateway.appkeys import HTTP_METRICS
from gateway.errors import ApiError, error_body
from gateway.ids import new_request_id
from gateway.metrics import route_label
from gateway.responses import json_response
from storage.redis_client import REDIS_UNAVAILABLE_ERRORS

log = structlog.get_logger(__name__)

REQUEST_ID_HEADER = "X-Request-ID"
REQUEST_ID_KEY = web.RequestKey("request_id", str)
_SANE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
REDIS_RETRY_AFTER_S = 1
CLIENT_CLOSED_REQUEST = 499

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


def _request_id(request: web.Request) -> str:
    incoming = request.headers.get(REQUEST_ID_HEADER, "")
    return incoming if _SANE_REQUEST_ID.match(incoming) else new_request_id()


def _is_preflight(request: web.Request) -> bool:
    return request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers


def _preflight_response(request: web.Request, origin: str | None) -> web.Response:
    """The answer to a CORS preflight of an allowed ``origin`` (None: not allowed)."""
    if origin is None:
        return _json_error(request, 403, "origin not allowed", "cors_origin_not_allowed")
    return web.Response(status=204, headers={
        "Access-Control-Allow-Origin": origin,
        "Access-Control-Allow-Credentials": "true",
        "Access-Control-Allow-Methods": CORS_ALLOW_METHODS,
        "Access-Control-Allow-Headers": CORS_ALLOW_HEADERS,
        "Access-Control-Max-Age": str(CORS_MAX_AGE_S),
        "Vary": "Origin",
    })


def _add_cors_headers(response: web.StreamResponse, origin: str | None) -> None:
    """CORS headers for an allowed ``origin`` (None: not allowed); ``Vary`` always."""
    if origin is not None:
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Access-Control-Allow-Credentials"] = "true"
        response.headers["Access-Control-Expose-Headers"] = CORS_EXPOSE_HEADERS
    response.headers.add("Vary", "Origin")


def _add_security_headers(response: web.StreamResponse) -> None:
    headers = response.headers
    for name, value in SECURITY_HEADERS.items():
        headers.setdefault(name, value)


def gateway_middleware_factory(
    cors_allow_origins: tuple[str, ...] | None, *, security_headers: bool,
    max_body_bytes: int | None,
) -> Any:
    """Request id, metrics, errors as JSON and, when asked, CORS (``cors_allow_origins``),
    security headers and the body limit (``max_body_bytes``)."""
    allowed = None if cors_allow_origins is None else frozenset(cors_allow_origins)

    @web.middleware
    async def gateway_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        request_id = _request_id(request)
        request[REQUEST_ID_KEY] = request_id
        # bind/reset rather than ``bound_contextvars``, which copies the whole context twice.
        log_context = structlog.contextvars.bind_contextvars(request_id=request_id)
        started = time.perf_counter()
        status = 500
        try:
            allowed_origin = None
            if allowed is not None:
                origin = request.headers.get("Origin")
                allowed_origin = origin if origin in allowed else None
            response: web.StreamResponse
            if allowed is not None and _is_preflight(request):
                response = _preflight_response(request, allowed_origin)
            else:
                try:
                    if max_body_bytes is not None:
                        _check_body_limit(request, max_body_bytes)
                    response = await handler(request)
                except Exception as exc:  # noqa: BLE001 - every error becomes a JSON answer
                    response = _error_response(request, exc)
                if security_headers:
                    _add_security_headers(response)
                if allowed is not None:
                    _add_cors_headers(response, allowed_origin)
            status = response.status
            response.headers[REQUEST_ID_HEADER] = request_id
            return response
        except web.HTTPException as exc:
            status = exc.status
            exc.headers[REQUEST_ID_HEADER] = request_id
            raise
        except asyncio.CancelledError:
            # aiohttp cancels the handler when the client goes away (say, mid-body): not a
            # server error. 499 is nginx's "client closed request".
            status = CLIENT_CLOSED_REQUEST
            raise
        finally:
            request.app[HTTP_METRICS].observe(
                request.method, route_label(request), status, time.perf_counter() - started
            )
            structlog.contextvars.reset_contextvars(**log_context)

    return gateway_middleware


def _json_error(
    request: web.Request, status: int, detail: str, code: str, headers: dict[str, str] | None = None,
    **extra: Any,
) -> web.Response:
    return json_response(
        error_body(detail, code, request_id_of(request), **extra), status=status, headers=headers
    )


_HTTP_CODES = {
    400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
    405: "method_not_allowed", 409: "conflict", 411: "length_required",
    413: "payload_too_large", 415: "unsupported_media_type", 429: "rate_limited",
}


def _check_body_limit(request: web.Request, limit: int) -> None:
    route_handler = getattr(request.match_info, "handler", None)
    streams = getattr(route_handler, _STREAMS_BODY_ATTR, False)
    if not streams and request.content_length is not None and request.content_length > limit:
        raise ApiError(
            f"request body too large: at most {limit} bytes", status=413, code="payload_too_large"
        )


def _error_response(request: web.Request, exc: Exception) -> web.Response:
    """The JSON answer to ``exc``; an HTTP exception below 400 (a redirect) is raised again."""
    if isinstance(exc, ApiError):
        return _json_error(request, exc.status, exc.detail, exc.code, exc.headers, **exc.extra)
    if isinstance(exc, REDIS_UNAVAILABLE_ERRORS):
        log.warning("redis_unavailable", error=str(exc), path=request.path)
        return _json_error(
            request, 503, "the service's data store is unavailable; retry shortly",
            "store_unavailable", {"Retry-After": str(REDIS_RETRY_AFTER_S)},
        )
    if isinstance(exc, web.HTTPException):
        if exc.status < 400:
            raise exc
        headers = {
            k: v for k, v in exc.headers.items() if k.lower() not in ("content-type", "content-length")
        }
        detail = exc.reason if exc.status != 413 else "request body too large"
        return _json_error(
            request, exc.status, detail, _HTTP_CODES.get(exc.status, f"http_{exc.status}"), headers
        )
    log.exception("unhandled_error", path=request.path, method=request.method, exc_info=exc)
    return _json_error(request, 500, "internal error", "internal_error")
