"""cleanup_ctx generators: each creates one client or service, stores it under its AppKey,
yields, and closes it. Order matters: Redis and S3 first, then what is built on them."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from gateway.appkeys import LLM, METRICS_REGISTRY, PUBLISHER, REDIS, S3, SETTINGS, TRANSCRIPTION
from gateway.wiring import streams_config
from llm.lifecycle import open_llm
from storage.redis_client import open_redis
from storage.s3_client import open_s3
from streams.publisher import Publisher
from transcription.lifecycle import open_transcription


async def redis_ctx(app: web.Application) -> AsyncIterator[None]:
    """The pooled Redis client, and the process's event publisher on it."""
    settings = app[SETTINGS]
    async with open_redis(settings) as client:
        app[REDIS] = client
        app[PUBLISHER] = Publisher.from_config(client, streams_config(settings))
        yield


async def s3_ctx(app: web.Application) -> AsyncIterator[None]:
    async with open_s3(app[SETTINGS]) as client:
        app[S3] = client
        yield


async def llm_ctx(app: web.Application) -> AsyncIterator[None]:
    """The LLM layer (provider, cluster-wide limiter, job store); after ``redis_ctx``."""
    async with open_llm(app[SETTINGS], app[REDIS], app[METRICS_REGISTRY]) as service:
        app[LLM] = service
        yield


async def transcription_ctx(app: web.Application) -> AsyncIterator[None]:
    """The transcriber chosen by ``TRANSCRIBER`` and its call bound; after ``redis_ctx``."""
    async with open_transcription(app[SETTINGS], app[REDIS], app[METRICS_REGISTRY]) as service:
        app[TRANSCRIPTION] = service
        yield
