"""Liveness, readiness and the Prometheus exposition."""

from __future__ import annotations

import asyncio

from aiohttp import web
from botocore.exceptions import BotoCoreError, ClientError
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from gateway.api_docs import endpoint
from gateway.appkeys import API_SERVICES, METRICS_REGISTRY, REDIS, S3, SETTINGS
from gateway.responses import json_response
from storage.redis_client import REDIS_UNAVAILABLE_ERRORS

READINESS_TIMEOUT_S = 1.0

routes = web.RouteTableDef()


@routes.get("/healthz")
@endpoint("Liveness", tags=["ops"], responses={200: {"type": "object"}})
async def healthz(request: web.Request) -> web.Response:
    """Alive: the process answers. Checks nothing else on purpose."""
    return json_response({"status": "ok"})


async def _ping_redis(app: web.Application) -> None:
    """PING through the pool and, in a gateway process, through the auto-pipelined
    connection the API's scripts use."""
    services = app.get(API_SERVICES)
    if services is not None and services.autopipeline is not None:
        await asyncio.gather(app[REDIS].ping(), services.autopipeline.ping())
    else:
        await app[REDIS].ping()


_REDIS_CHECK_ERRORS: tuple[type[BaseException], ...] = (TimeoutError, *REDIS_UNAVAILABLE_ERRORS)


async def _check_redis(app: web.Application) -> str | None:
    try:
        await asyncio.wait_for(_ping_redis(app), READINESS_TIMEOUT_S)
    except _REDIS_CHECK_ERRORS as exc:
        return f"redis: {type(exc).__name__}: {exc}" if str(exc) else f"redis: {type(exc).__name__}"
    return None


async def _check_s3(app: web.Application) -> str | None:
    bucket = app[SETTINGS].s3_bucket
    try:
        await asyncio.wait_for(app[S3].head_bucket(Bucket=bucket), READINESS_TIMEOUT_S * 2)
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "error")
        return f"s3: bucket {bucket!r}: {code}"
    except (TimeoutError, BotoCoreError, OSError) as exc:
        return f"s3: {type(exc).__name__}: {exc}"
    return None


@routes.get("/readyz")
@endpoint("Readiness (Redis and S3 reachable)", tags=["ops"],
          responses={200: {"type": "object"}, 503: {"type": "object"}})
async def readyz(request: web.Request) -> web.Response:
    """Ready: Redis answers PING and the S3 bucket is reachable; else 503 naming what failed."""
    redis_problem, s3_problem = await asyncio.gather(
        _check_redis(request.app), _check_s3(request.app)
    )
    checks = {"redis": redis_problem or "ok", "s3": s3_problem or "ok"}
    failed = [name for name, problem in (("redis", redis_problem), ("s3", s3_problem)) if problem]
    if failed:
        return json_response(
            {
                "status": "unavailable",
                "detail": "; ".join(checks[name] for name in failed),
                "code": "not_ready",
                "failed": failed,
                "checks": checks,
            },
            status=503,
            headers={"Retry-After": "1"},
        )
    return json_response({"status": "ok", "checks": checks})


@routes.get("/metrics")
@endpoint("Prometheus metrics (text exposition)", tags=["ops"],
          responses={200: {"type": "string"}}, media_type="text/plain")
async def metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[METRICS_REGISTRY])
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
