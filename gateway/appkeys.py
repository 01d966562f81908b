"""Every typed key stored on the aiohttp application, in one place.

Types are imported for the type checker only: this module imports nothing of the
project at run time, so any module may import it without a cycle.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from config import Settings
    from gateway.api_services import ApiServices
    from gateway.metrics import HttpMetrics
    from llm.lifecycle import LlmService
    from recovery.sweeper import StuckSweeper
    from storage.redis_client import RedisClient
    from storage.s3_client import S3Client
    from streams.publisher import Publisher
    from streams.runtime import ConsumerRuntime
    from transcription.lifecycle import TranscriptionService

SETTINGS: web.AppKey[Settings] = web.AppKey("settings")
#: The app's own Prometheus registry (no process-global default registry).
METRICS_REGISTRY: web.AppKey[CollectorRegistry] = web.AppKey("metrics_registry")
REDIS: web.AppKey[RedisClient] = web.AppKey("redis")
S3: web.AppKey[S3Client] = web.AppKey("s3")
HTTP_METRICS: web.AppKey[HttpMetrics] = web.AppKey("http_metrics")
#: The process's one publisher of events (on the pooled Redis client).
PUBLISHER: web.AppKey[Publisher] = web.AppKey("publisher")

#: Services of the participant and host API (store, limiters, publisher, presign client).
API_SERVICES: web.AppKey[ApiServices] = web.AppKey("api_services")

#: The LLM layer: bounded client, cluster limiter, metrics and job store.
LLM: web.AppKey[LlmService] = web.AppKey("llm")

#: Transcription: the provider, its call bound and metrics.
TRANSCRIPTION: web.AppKey[TranscriptionService] = web.AppKey("transcription")

#: The consumer groups this process runs (worker processes and ``dev``).
CONSUMERS: web.AppKey[ConsumerRuntime] = web.AppKey("stream_consumers")

#: The demo project ``dev`` made on its first start (the landing page links it); unset elsewhere.
DEMO_PROJECT_ID: web.AppKey[str] = web.AppKey("demo_project_id")
#: The stuck-work sweeper (worker processes and ``dev`` run its loop; the admin routes use it).
RECOVERY: web.AppKey[StuckSweeper] = web.AppKey("recovery")
#: ``/api/openapi.json``, built once the routes are final (at start-up).
OPENAPI_DOCUMENT: web.AppKey[dict[str, object]] = web.AppKey("openapi_document")
