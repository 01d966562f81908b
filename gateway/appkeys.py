"""Every typed key stored on the aiohttp application, in one place."""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CollectorRegistry

from config import Settings
from gateway.api_services import ApiServices
from gateway.metrics import HttpMetrics
from storage.redis_client import RedisClient
from storage.s3_client import S3Client

SETTINGS = web.AppKey("settings", Settings)
#: The app's own Prometheus registry (no process-global default registry).
METRICS_REGISTRY = web.AppKey("metrics_registry", CollectorRegistry)
REDIS = web.AppKey("redis", RedisClient)  # type: ignore[arg-type]
S3 = web.AppKey("s3", S3Client)  # type: ignore[arg-type]
HTTP_METRICS = web.AppKey("http_metrics", HttpMetrics)

#: Services of the participant and host API (store, limiters, publisher, presign client).
API_SERVICES = web.AppKey("api_services", ApiServices)

#: The LLM layer: bounded client, cluster limiter, metrics and job store (see ``llm.lifecycle``).
LLM = web.AppKey("llm", "llm.lifecycle.LlmService")  # type: ignore[arg-type]

#: Transcription: the provider, its call bound and metrics (see ``transcription.lifecycle``).
TRANSCRIPTION = web.AppKey(  # type: ignore[arg-type]
    "transcription", "transcription.lifecycle.TranscriptionService"
)
