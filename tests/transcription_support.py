"""Shared pieces of the transcription pipeline tests (test_transcription_*.py, and the
recovery tests built on them): settings with short leases, the ``transcription`` group run
in this process, and waits and reads of what the pipeline leaves behind.

A pytest plugin (tests/conftest.py loads it): its fixtures ``store`` and ``run_workers``
reach every test module. A module sets its short leases with
``pytestmark = pytest.mark.env(**OVERRIDES)`` (the session's ``settings``, ``api_env`` and
``client`` then carry them) and names its own ``bucket_name``.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Protocol

import pytest
from api_support import stream_events
from prometheus_client import CollectorRegistry
from waiting import wait_until

from config import Settings
from events.catalogue import ChunkUpload
from gateway.wiring import publisher_for, streams_config
from storage.conversations import ConversationStore
from storage.redis_client import RedisClient
from storage.s3_client import S3Client
from streams.runtime import ConsumerRuntime
from transcription.base import Transcriber
from transcription.lifecycle import TranscriptionService, make_bound, transcription_group_for
from transcription.metrics import TranscriptionMetrics

SPEECH = Path(__file__).parent / "fixtures" / "speech"
ROOT = Path(__file__).resolve().parent.parent
#: Short leases so that a killed worker's chunk moves on quickly; few attempts.
OVERRIDES = {
    "STREAM_LEASE_S": "2", "TRANSCRIPTION_MAX_ATTEMPTS": "3", "TRANSCRIPTION_CONCURRENCY": "4",
    "SHUTDOWN_GRACE_S": "1",
}
DEADLINE_S = 120.0


class RunWorkers(Protocol):
    """``async with run_workers(transcriber, processes=n)``: n consumers of the group here."""

    def __call__(
        self, transcriber: Transcriber, processes: int = 1
    ) -> contextlib.AbstractAsyncContextManager[TranscriptionService]: ...


@pytest.fixture
def store(redis: RedisClient) -> ConversationStore:
    return ConversationStore(redis)


@pytest.fixture
def run_workers(settings: Settings, redis: RedisClient, s3: S3Client) -> RunWorkers:
    return workers_runner(settings, redis, s3)


def workers_runner(settings: Settings, redis: RedisClient, s3: S3Client) -> RunWorkers:
    """The ``run_workers`` of a test: consumers of the real ``transcription`` group."""

    @contextlib.asynccontextmanager
    async def run(
        transcriber: Transcriber, processes: int = 1
    ) -> AsyncIterator[TranscriptionService]:
        metrics = TranscriptionMetrics(CollectorRegistry())
        service = TranscriptionService(transcriber, make_bound(settings, redis, metrics), metrics)
        spec = transcription_group_for(
            service, settings=settings, redis=redis, s3=s3, publisher=publisher_for(redis, settings)
        )
        runtimes = [
            ConsumerRuntime(redis, streams_config(settings), CollectorRegistry(), [spec],
                            consumer_name=f"test-{i}-{uuid.uuid4().hex[:6]}")
            for i in range(processes)
        ]
        for runtime in runtimes:
            await runtime.start()
        try:
            yield service
        finally:
            await asyncio.gather(*(r.stop(1.0) for r in runtimes))

    return run


async def conversation_with_chunks(
    store: ConversationStore, s3: S3Client, settings: Settings, count: int,
    *, confirm_now: bool = True,
) -> tuple[str, list[ChunkUpload]]:
    """A new conversation with ``count`` audio chunks in S3 (confirmed unless told not to),
    and the ``chunk.uploaded`` payloads that would announce them."""
    project = await store.create_project({"name": "p"})
    conversation = await store.create_conversation(project["id"], {"title": "t"})
    cid = conversation["id"]
    uploads = []
    for i in range(count):
        chunk_id = str(uuid.uuid4())
        key = f"conversation/{cid}/chunks/{chunk_id}-c.webm"
        await store.issue_chunk(cid, chunk_id, path=key, filename="c.webm",
                                content_type="audio/webm", ttl_s=600)
        await s3.put_object(Bucket=settings.s3_bucket, Key=key, Body=b"audio %d" % i)
        uploads.append(ChunkUpload(cid, chunk_id, key, "audio/webm"))
        if confirm_now:
            await store.confirm_chunk(cid, chunk_id, path=key, source="PORTAL_AUDIO",
                                      timestamp=f"2026-01-01T10:{i // 60:02d}:{i % 60:02d}Z",
                                      verified=True)
    return cid, uploads


async def is_finalized(store: ConversationStore, cid: str) -> bool:
    conversation = await store.get_conversation(cid)
    return bool(conversation and conversation["finalized_at"])


async def until_finalized(store: ConversationStore, cid: str, *, message: str) -> None:
    await wait_until(lambda: is_finalized(store, cid), timeout_s=DEADLINE_S, interval_s=0.1,
                     message=message)


async def until_drained(redis: RedisClient) -> None:
    """Until every group of the transcription stream has read and acked everything."""

    async def idle() -> bool:
        groups = await redis.xinfo_groups("echo:{transcription}")
        return all(int(g["pending"]) == 0 and int(g.get("lag") or 0) == 0 for g in groups)

    await wait_until(idle, timeout_s=DEADLINE_S, interval_s=0.1,
                     message="the transcription stream did not drain")


async def read_object(s3: S3Client, settings: Settings, key: str) -> bytes:
    response = await s3.get_object(Bucket=settings.s3_bucket, Key=key)
    async with response["Body"] as body:
        return bytes(await body.read())


async def summary_requests(redis: RedisClient, cid: str) -> list[dict[str, Any]]:
    """The ``conversation.summarize`` events on the llm stream for conversation ``cid``."""
    return [e for e in await stream_events(redis, "llm") if e["type"] == "conversation.summarize"
            and e["payload"]["conversation_id"] == cid]
