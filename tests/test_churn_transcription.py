"""Transcription under churn (issue #14): attempts are started runs, outages cost time.

Workers killed before they start an entry do not use up a chunk's attempts; S3
or the provider being unreachable (or answering 5xx) is retried over
``TRANSCRIPTION_RETRY_WINDOW_S`` with deferrals, then fails the chunk with the
last error; unusable audio still fails at once. The ``transcription`` group
runs in this process against the session's real Redis and SeaweedFS; an
outage is a second S3 client pointed at a closed port (botocore's own
``EndpointConnectionError``), the provider the OpenAI-compatible emulator.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
import socket
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any, cast

import pytest
from emulators.openai_audio import OpenAIAudioEmulator, Reply
from prometheus_client import CollectorRegistry
from waiting import wait_until

from config import Secret, Settings
from events import catalogue as events
from events.catalogue import ChunkUpload
from gateway.wiring import publisher_for, streams_config
from storage.conversations import ConversationStore
from storage.redis_client import RedisClient
from storage.s3_client import S3Client, open_s3
from streams.runtime import ConsumerRuntime
from transcription.base import NoopTranscriber, Transcriber
from transcription.lifecycle import open_transcription, transcription_group_for

#: Few attempts, a short lease (a dead worker's entry moves on in about a second), a window
#: long enough for the 8 s outage below and short waits between tries.
OVERRIDES = {
    "STREAM_LEASE_S": "1", "TRANSCRIPTION_MAX_ATTEMPTS": "2", "SHUTDOWN_GRACE_S": "1",
    "TRANSCRIPTION_RETRY_WINDOW_S": "30", "TRANSCRIPTION_RETRY_MAX_DELAY_S": "0.5",
    "TRANSCRIBER_HTTP_RETRIES": "0",
}
#: Longer than the old budget: 5 deliveries at 0.5 s base back-off, about 7.5 s.
OUTAGE_S = 8.5
STREAM = "echo:{transcription}"


@pytest.fixture(scope="module")
def bucket_name() -> str:
    """One bucket for the module: the session's SeaweedFS has room for few (``-volume.max``)."""
    return f"churn-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def settings(env: dict[str, str]) -> Settings:
    return Settings.from_env({**env, **OVERRIDES})


@pytest.fixture
def store(redis: RedisClient) -> ConversationStore:
    return ConversationStore(redis)


@contextlib.asynccontextmanager
async def workers(
    settings: Settings, redis: RedisClient, s3: Any, transcriber: Transcriber | None
) -> AsyncIterator[None]:
    """The ``transcription`` group in this process, with ``s3`` (perhaps a wrapper) and
    ``transcriber`` (None: the provider the settings name; here always ``openai``)."""
    assert transcriber is not None or settings.transcriber == "openai"
    async with open_transcription(
        settings, redis, CollectorRegistry(), transcriber=transcriber
    ) as service:
        spec = transcription_group_for(
            service, settings=settings, redis=redis, s3=s3,
            publisher=publisher_for(redis, settings),
        )
        runtime = ConsumerRuntime(redis, streams_config(settings), CollectorRegistry(), [spec],
                                  consumer_name=f"live-{uuid.uuid4().hex[:6]}")
        await runtime.start()
        try:
            yield
        finally:
            await runtime.stop(1.0)


async def chunk_ready(store: ConversationStore, s3: S3Client, settings: Settings,
                      body: bytes = b"audio bytes") -> ChunkUpload:
    """An uploaded chunk of a finished conversation, its ``chunk.uploaded`` event published."""
    project = await store.create_project({"name": "p"})
    cid = (await store.create_conversation(project["id"], {"title": "t"}))["id"]
    chunk_id = str(uuid.uuid4())
    key = f"conversation/{cid}/chunks/{chunk_id}-c.webm"
    await store.issue_chunk(cid, chunk_id, path=key, filename="c.webm",
                            content_type="audio/webm", ttl_s=600)
    await s3.put_object(Bucket=settings.s3_bucket, Key=key, Body=body)
    await store.confirm_chunk(cid, chunk_id, path=key, source="PORTAL_AUDIO",
                              timestamp="2026-01-01T10:00:00Z", verified=True)
    await store.finish(cid)
    upload = ChunkUpload(cid, chunk_id, key, "audio/webm")
    await events.publish(publisher_for(store.redis, settings), events.CHUNK_UPLOADED, upload)
    return upload


async def chunk_ended(store: ConversationStore, upload: ChunkUpload) -> dict[str, Any]:
    async def ended() -> dict[str, Any] | None:
        chunk = await store.get_chunk(upload.conversation_id, upload.chunk_id)
        return chunk if chunk and chunk["status"] in ("transcribed", "failed") else None

    found: dict[str, Any] | None = await wait_until(
        ended, timeout_s=60, interval_s=0.1, message="the chunk did not end"
    )
    assert found is not None
    return found


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class S3Outage:
    """The real S3 client, except that ``get_object`` goes to a closed port (connection
    refused: botocore's ``EndpointConnectionError``) for ``outage_s`` from its first call
    and for at least ``min_refusals`` calls (a loaded machine fits fewer calls in a time)."""

    def __init__(
        self, s3: S3Client, unreachable: S3Client, *, outage_s: float, min_refusals: int = 0
    ) -> None:
        self._s3, self._unreachable, self.outage_s = s3, unreachable, outage_s
        self.min_refusals = min_refusals
        self.first_at: float | None = None
        self.refused = 0
        self.served = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._s3, name)

    async def get_object(self, **kwargs: Any) -> Any:
        now = time.monotonic()
        if self.first_at is None:
            self.first_at = now
        if now - self.first_at < self.outage_s or self.refused < self.min_refusals:
            self.refused += 1
            return await self._unreachable.get_object(**kwargs)
        self.served += 1
        return await self._s3.get_object(**kwargs)


@contextlib.asynccontextmanager
async def s3_outage(
    settings: Settings, s3: S3Client, outage_s: float, min_refusals: int = 0
) -> AsyncIterator[S3Outage]:
    async with open_s3(settings, endpoint_url=f"http://127.0.0.1:{closed_port()}") as dead:
        yield S3Outage(s3, dead, outage_s=outage_s, min_refusals=min_refusals)


async def stream_entries(redis: RedisClient) -> list[tuple[str, dict[str, str]]]:
    return cast(list[tuple[str, dict[str, str]]], await redis.xrange(STREAM))


async def chunk_events(redis: RedisClient) -> int:
    return sum(f["type"] == "chunk.uploaded" for _, f in await stream_entries(redis))


# --- attempts are started runs


async def test_an_entry_abandoned_twice_by_dead_workers_is_still_transcribed(
    store: ConversationStore, s3: S3Client, settings: Settings, redis: RedisClient,
) -> None:
    """Two workers took the entry and died before starting it: two more Redis deliveries than
    ``TRANSCRIPTION_MAX_ATTEMPTS`` allows, yet no attempt was spent on it."""
    upload = await chunk_ready(store, s3, settings)
    group = events.TRANSCRIPTION_GROUP
    await redis.xgroup_create(STREAM, group, id="0", mkstream=True)
    # What a dying worker leaves: the entry read (then claimed again) and never started.
    [(entry_id, _)] = await stream_entries(redis)
    assert await redis.xreadgroup(group, "dead-1", {STREAM: ">"}, count=1)
    await redis.xclaim(STREAM, group, "dead-2", 0, [entry_id])
    [pending] = cast(list[dict[str, Any]], await redis.xpending_range(STREAM, group, "-", "+", 10))
    assert pending["times_delivered"] == 2 == settings.transcription_max_attempts

    async with workers(settings, redis, s3, NoopTranscriber("words")):
        chunk = await chunk_ended(store, upload)
    assert (chunk["status"], chunk["transcript"]) == ("transcribed", "words"), chunk["error"]
    assert await redis.xlen(f"{STREAM}:dead") == 0


# --- transient errors: a window of time, not a count


@pytest.mark.slow
async def test_an_s3_outage_longer_than_the_old_budget_ends_with_the_chunk_transcribed(
    store: ConversationStore, s3: S3Client, settings: Settings, redis: RedisClient,
) -> None:
    # More refusals than attempts, and longer than the old budget, inside a roomy window.
    settings = dataclasses.replace(settings, transcription_retry_window_s=300)
    upload = await chunk_ready(store, s3, settings)
    refusals = settings.transcription_max_attempts + 1
    async with s3_outage(settings, s3, OUTAGE_S, min_refusals=refusals) as outage, workers(
        settings, redis, outage, NoopTranscriber("words")
    ):
        chunk = await chunk_ended(store, upload)
    assert chunk["status"] == "transcribed", chunk["error"]
    assert outage.first_at is not None and time.monotonic() - outage.first_at >= OUTAGE_S
    assert outage.refused > settings.transcription_max_attempts and outage.served == 1
    assert await redis.xlen(f"{STREAM}:dead") == 0


@pytest.mark.slow
async def test_when_the_window_is_spent_the_chunk_fails_with_the_last_transient_error(
    store: ConversationStore, s3: S3Client, env: dict[str, str], redis: RedisClient,
) -> None:
    # One refused get_object takes about 3 s (botocore's own three tries): room for one or
    # two, depending on how loaded the machine is.
    settings = Settings.from_env({**env, **OVERRIDES, "TRANSCRIPTION_RETRY_WINDOW_S": "5"})
    upload = await chunk_ready(store, s3, settings)
    async with s3_outage(settings, s3, outage_s=3600) as outage, workers(
        settings, redis, outage, NoopTranscriber("words")
    ):
        chunk = await chunk_ended(store, upload)
        assert outage.first_at is not None and time.monotonic() - outage.first_at >= 5.0

        async def finalized() -> bool:
            conversation = await store.get_conversation(upload.conversation_id)
            return bool(conversation and conversation["finalized_at"])

        await wait_until(finalized, timeout_s=30, interval_s=0.1,
                         message="the failed chunk held its conversation back")
    assert chunk["status"] == "failed"
    assert chunk["error"].startswith("transcription gave up after transient errors for ")
    assert re.search(
        r"\(\d+ tr(y|ies), TRANSCRIPTION_RETRY_WINDOW_S=5\); the last: StorageUnavailable: "
        r"S3 get_object failed: EndpointConnectionError: ", chunk["error"]
    ), chunk["error"]
    assert outage.refused >= 1 and outage.served == 0
    assert await redis.xlen(f"{STREAM}:dead") == 0


def with_provider(settings: Settings, emulator: OpenAIAudioEmulator) -> Settings:
    """``settings`` with ``TRANSCRIBER=openai`` pointed at the emulator."""
    return dataclasses.replace(
        settings, transcriber="openai", transcriber_url=emulator.base_url,
        transcriber_api_key=Secret(emulator.api_key),
    )


@pytest.fixture
async def emulator() -> AsyncIterator[OpenAIAudioEmulator]:
    server = OpenAIAudioEmulator(api_key="sk-test")
    await server.start()
    yield server
    await server.close()


async def test_a_provider_answering_503_more_often_than_the_attempts_is_waited_out(
    store: ConversationStore, s3: S3Client, settings: Settings, redis: RedisClient,
    emulator: OpenAIAudioEmulator,
) -> None:
    emulator.script = [Reply(503, message="upstream overloaded")] * 4
    emulator.responder = lambda data: "heard you"
    upload = await chunk_ready(store, s3, settings)
    async with workers(with_provider(settings, emulator), redis, s3, None):
        chunk = await chunk_ended(store, upload)
    assert (chunk["status"], chunk["transcript"]) == ("transcribed", "heard you"), chunk["error"]
    assert [r.status for r in emulator.received] == [503, 503, 503, 503, 200]


async def test_unusable_audio_still_fails_at_once(
    store: ConversationStore, s3: S3Client, settings: Settings, redis: RedisClient,
    emulator: OpenAIAudioEmulator,
) -> None:
    emulator.script = [Reply(400, message="Invalid file format.")]
    upload = await chunk_ready(store, s3, settings)
    async with workers(with_provider(settings, emulator), redis, s3, None):
        chunk = await chunk_ended(store, upload)
    assert chunk["status"] == "failed"
    assert "cannot use this audio: Invalid file format." in chunk["error"]
    assert [r.status for r in emulator.received] == [400]
    assert await chunk_events(redis) == 1  # never deferred
    assert await redis.zcard(f"{STREAM}:delayed") == 0


async def test_an_empty_object_fails_at_once_without_calling_the_provider(
    store: ConversationStore, s3: S3Client, settings: Settings, redis: RedisClient,
    emulator: OpenAIAudioEmulator,
) -> None:
    upload = await chunk_ready(store, s3, settings, body=b"")
    async with workers(with_provider(settings, emulator), redis, s3, None):
        chunk = await chunk_ended(store, upload)
    assert (chunk["status"], chunk["error"]) == ("failed", "the audio object is empty")
    assert emulator.received == [] and await chunk_events(redis) == 1


# --- the terminal message says how the attempts ended


GAVE_UP = "transcription gave up after 2 attempts"
BOOM = "RuntimeError: boom"
CRASHES = f"{GAVE_UP}: the worker stopped mid-way each time"
CRASH_AFTER_ERROR = (f"{GAVE_UP}: the worker stopped mid-way on the last one; an earlier one "
                     f"ended by a handler error: {BOOM}")
ERRORS = f"{GAVE_UP}, the last ended by a handler error: {BOOM}"


@pytest.mark.parametrize(("reclaimed", "last", "expected"), [
    (True, "", CRASHES), (True, BOOM, CRASH_AFTER_ERROR), (False, BOOM, ERRORS),
], ids=["crashes", "crash-after-error", "errors"])
async def test_an_attempt_past_the_limit_fails_the_chunk_saying_how_the_attempts_ended(
    store: ConversationStore, s3: S3Client, settings: Settings, redis: RedisClient,
    reclaimed: bool, last: str, expected: str,
) -> None:
    from streams.envelope import decode
    from streams.names import StreamNames
    from streams.spec import EventContext
    from transcription.lifecycle import build_handler

    upload = await chunk_ready(store, s3, settings)
    [(entry_id, fields)] = await stream_entries(redis)
    group = events.TRANSCRIPTION_GROUP
    if last:
        await redis.hset(f"{STREAM}:errors", StreamNames.error_field(group, entry_id), last)
    envelope = decode(fields)
    attempts = settings.transcription_max_attempts + 1
    ctx = EventContext(
        stream=events.TRANSCRIPTION, group=group, entry_id=entry_id, envelope=envelope,
        payload=ChunkUpload.from_payload(envelope.payload), deliveries=attempts + 2,
        names=StreamNames("echo"), attempts=attempts, reclaimed_after_crash=reclaimed,
    )
    async with open_transcription(settings, redis, CollectorRegistry(),
                                  transcriber=NoopTranscriber("unused")) as service:
        handler = build_handler(service, settings=settings, redis=redis, s3=s3,
                                publisher=publisher_for(redis, settings))
        await handler(ctx)
    chunk = await store.get_chunk(upload.conversation_id, upload.chunk_id)
    assert chunk is not None and chunk["status"] == "failed"
    assert chunk["error"] == expected
