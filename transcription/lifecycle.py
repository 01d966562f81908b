"""The transcription service of one process and its consumer group, built from explicit clients.

The gateway's composition root owns the service (``transcription_ctx``) and asks
:func:`transcription_group_for` for the ``transcription`` group's spec.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
from prometheus_client import CollectorRegistry

from config import Settings
from storage.conversations import ConversationStore
from storage.redis_client import RedisClient
from storage.s3_client import S3Client
from streams.publisher import Publisher
from streams.spec import GroupSpec
from transcription.base import Transcriber
from transcription.bound import CallBound
from transcription.consumer import TranscriptionHandler, transcription_group
from transcription.finalization import Finalizer
from transcription.local_provider import LocalWhisperTranscriber
from transcription.metrics import TranscriptionMetrics
from transcription.openai_provider import OpenAITranscriber


@dataclass(frozen=True, slots=True)
class TranscriptionService:
    transcriber: Transcriber
    bound: CallBound
    metrics: TranscriptionMetrics


def make_bound(settings: Settings, redis: RedisClient, metrics: TranscriptionMetrics) -> CallBound:
    return CallBound.create(
        redis, metrics, prefix=settings.redis_key_prefix,
        per_process=settings.transcription_max_concurrent_process,
        cluster=settings.transcription_max_concurrent_calls,
        lease_s=settings.transcription_lease_s,
        model=settings.transcriber_model if settings.transcriber == "openai" else "whisper-local",
    )


@contextlib.asynccontextmanager
async def open_transcription(
    settings: Settings, redis: RedisClient, registry: CollectorRegistry,
    *, transcriber: Transcriber | None = None,
) -> AsyncIterator[TranscriptionService]:
    """Create the provider chosen by ``TRANSCRIBER`` (or use ``transcriber``) and close it on exit.

    ``local`` loads the model here, once per process (about a second).
    """
    metrics = TranscriptionMetrics(registry)
    bound = make_bound(settings, redis, metrics)
    async with bound:  # its process liveness heartbeat runs while the service is open
        if transcriber is not None:
            yield TranscriptionService(transcriber, bound, metrics)
            return
        if settings.transcriber == "openai":
            async with aiohttp.ClientSession() as session:
                yield TranscriptionService(
                    OpenAITranscriber(
                        session, base_url=str(settings.transcriber_url),
                        api_key=settings.transcriber_api_key.reveal(),
                        model=settings.transcriber_model,
                        bound=bound, metrics=metrics, timeout_s=settings.transcriber_timeout_s,
                        retries=settings.transcriber_http_retries,
                        retry_after_max_s=settings.transcriber_retry_after_max_s,
                    ),
                    bound, metrics,
                )
            return
        async with LocalWhisperTranscriber.open(
            model_dir=settings.whisper_model_dir, cache_dir=settings.whisper_cache_dir,
            threads=settings.whisper_threads, cpu_threads=settings.whisper_cpu_threads,
            bound=bound, metrics=metrics, min_duration_s=settings.transcription_min_duration_s,
        ) as local:
            yield TranscriptionService(local, bound, metrics)


def build_handler(
    service: TranscriptionService, *, settings: Settings, redis: RedisClient, s3: S3Client,
    publisher: Publisher,
) -> TranscriptionHandler:
    store = ConversationStore(redis, key_prefix=settings.redis_key_prefix)
    finalizer = Finalizer(
        store=store, s3=s3, publisher=publisher, settings=settings, metrics=service.metrics,
    )
    return TranscriptionHandler(
        store=store, s3=s3, publisher=publisher, transcriber=service.transcriber,
        finalizer=finalizer, settings=settings, metrics=service.metrics,
    )


def transcription_group_for(
    service: TranscriptionService, *, settings: Settings, redis: RedisClient, s3: S3Client,
    publisher: Publisher,
) -> GroupSpec:
    """The ``transcription`` group's spec from explicit clients."""
    return transcription_group(
        build_handler(service, settings=settings, redis=redis, s3=s3, publisher=publisher),
        settings,
    )
