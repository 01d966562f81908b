"""cleanup_ctx generators: each creates one client, stores it under its AppKey, yields, closes it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import structlog
from aiohttp import web

from gateway.appkeys import REDIS, S3, SETTINGS
from storage.redis_client import open_redis
from storage.s3_client import open_s3

log = structlog.get_logger(__name__)


async def redis_ctx(app: web.Application) -> AsyncIterator[None]:
    async with open_redis(app[SETTINGS]) as client:
        app[REDIS] = client
        yield


async def s3_ctx(app: web.Application) -> AsyncIterator[None]:
    async with open_s3(app[SETTINGS]) as client:
        app[S3] = client
        yield
