"""Chunks to transcripts: real speech transcribed and merged in timestamp order, one bad
chunk failing alone, a killed worker's chunk taken over, attempts bounded.

Uploads go the portal's way (get-upload-url, presigned POST to SeaweedFS,
confirm); the ``transcription`` group runs in this process with the real
faster-whisper model (or a stand-in transcriber where speech is beside the
point); Redis and S3 are the session's real servers.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from api_support import (
    ApiClient,
    P,
    confirm,
    get_upload_url,
    open_conversation,
    post_to_s3,
)
from prometheus_client import CollectorRegistry
from transcription_support import (
    DEADLINE_S,
    OVERRIDES,
    ROOT,
    SPEECH,
    RunWorkers,
    conversation_with_chunks,
    read_object,
    summary_requests,
    until_finalized,
)
from waiting import wait_until

from config import Settings
from events import catalogue as events
from gateway.wiring import publisher_for
from storage.conversations import ConversationStore
from storage.redis_client import RedisClient
from storage.s3_client import S3Client
from transcription.base import TranscriptResult
from transcription.consumer import TRANSIENT_SINCE_FIELD
from transcription.errors import TransientTranscriptionError
from transcription.finalization import transcript_keys
from transcription.lifecycle import make_bound
from transcription.local_provider import LocalWhisperTranscriber, packaged_model_dir
from transcription.metrics import TranscriptionMetrics

pytestmark = pytest.mark.env(**OVERRIDES)


@pytest.fixture(scope="module")
def bucket_name() -> str:
    """One bucket for the module: the session's SeaweedFS has room for few (``-volume.max``)."""
    return "test-transcription-chunks"


@pytest.fixture(scope="module")
def whisper() -> Iterator[tuple[Any, ThreadPoolExecutor]]:
    """The Whisper base model, loaded once for the module, and its one-thread pool."""
    pytest.importorskip("faster_whisper")
    from faster_whisper import WhisperModel

    model = WhisperModel(str(packaged_model_dir()), device="cpu", compute_type="int8",
                         local_files_only=True)
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="whisper-test")
    yield model, executor
    executor.shutdown(wait=True)


@pytest.fixture
def local_transcriber(whisper: tuple[Any, ThreadPoolExecutor], settings: Settings,
                      redis: RedisClient) -> LocalWhisperTranscriber:
    model, executor = whisper
    metrics = TranscriptionMetrics(CollectorRegistry())
    return LocalWhisperTranscriber(model, executor, bound=make_bound(settings, redis, metrics),
                                   metrics=metrics)


async def upload(client: ApiClient, cid: str, path: Path, content_type: str,
                 timestamp: str) -> str:
    """The portal's upload of one standalone chunk file; returns the chunk id."""
    grant = await get_upload_url(client, cid, filename=path.name, content_type=content_type)
    assert (await post_to_s3(grant, path.read_bytes())).status == 204
    resp = await confirm(client, cid, grant, timestamp=timestamp)
    assert resp.status == 200, await resp.text()
    return str(grant["chunk_id"])


async def conversation_view(client: ApiClient, pid: str, cid: str) -> dict[str, Any]:
    resp = await client.get(f"{P}/projects/{pid}/conversations/{cid}")
    assert resp.status == 200
    return dict(await resp.json())


async def finalized_view(client: ApiClient, pid: str, cid: str) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        view = await conversation_view(client, pid, cid)
        # The route reads the conversation, then its processing state: wait for the first
        # read to show it finalized, or a commit between the two reads shows half of it.
        return view if view["finalized_at"] and view["processing"]["finalized_at"] else None

    view: dict[str, Any] | None = await wait_until(
        check, timeout_s=DEADLINE_S, interval_s=0.1, message=f"conversation {cid} was not finalized"
    )
    assert view is not None
    return view


# --- real speech


@pytest.mark.slow
async def test_real_speech_is_transcribed_merged_in_timestamp_order_and_summarised_once(
    client: ApiClient, run_workers: RunWorkers, local_transcriber: LocalWhisperTranscriber,
    s3: S3Client, redis: RedisClient, settings: Settings,
) -> None:
    project, conversation = await open_conversation(client)
    pid, cid = project["id"], conversation["id"]
    # Uploaded out of order; the timestamps say how they were spoken.
    await upload(client, cid, SPEECH / "03-mountain.webm", "audio/webm;codecs=opus",
                 "2026-01-01T10:00:20.000Z")
    await upload(client, cid, SPEECH / "01-garden.webm", "audio/webm;codecs=opus",
                 "2026-01-01T10:00:00.000Z")
    await upload(client, cid, SPEECH / "02-bicycle.wav", "audio/wav", "2026-01-01T10:00:10.000Z")
    assert (await client.post(f"{P}/conversations/{cid}/finish")).status == 200

    async with run_workers(local_transcriber):
        view = await finalized_view(client, pid, cid)

    assert view["is_all_chunks_transcribed"] is True and view["status"] == "finalized"
    assert view["processing"]["chunks"] == {
        "pending_verification": 0, "uploaded": 0, "transcribing": 0, "transcribed": 3,
        "failed": 0, "total": 3,
    }
    json_key, text_key = transcript_keys(cid)
    assert view["processing"]["transcript"] == {"json_key": json_key, "text_key": text_key}
    text = (await read_object(s3, settings, text_key)).decode().lower()
    words = ["garden", "library", "yellow", "flowers", "brother", "bicycle", "school",
             "tomorrow", "climb", "mountain", "sunrise"]
    positions = [text.find(w) for w in words]
    assert -1 not in positions, text
    assert positions == sorted(positions), text
    doc = json.loads(await read_object(s3, settings, json_key))
    assert [c["timestamp"] for c in doc["chunks"]] == [
        "2026-01-01T10:00:00.000Z", "2026-01-01T10:00:10.000Z", "2026-01-01T10:00:20.000Z"]
    assert {c["status"] for c in doc["chunks"]} == {"transcribed"}
    assert [e["idem"] for e in await summary_requests(redis, cid)] == [f"summary:{cid}:3"]


@pytest.mark.slow
async def test_one_corrupt_chunk_fails_alone_and_the_conversation_still_finalizes(
    client: ApiClient, run_workers: RunWorkers, local_transcriber: LocalWhisperTranscriber,
    s3: S3Client, settings: Settings,
) -> None:
    project, conversation = await open_conversation(client)
    pid, cid = project["id"], conversation["id"]
    good = await upload(client, cid, SPEECH / "01-garden.webm", "audio/webm",
                        "2026-01-01T10:00:00.000Z")
    bad = await upload(client, cid, SPEECH / "corrupt.webm", "audio/webm",
                       "2026-01-01T10:00:05.000Z")
    assert (await client.post(f"{P}/conversations/{cid}/finish")).status == 200

    async with run_workers(local_transcriber):
        view = await finalized_view(client, pid, cid)

    assert view["processing"]["chunks"]["transcribed"] == 1
    assert view["processing"]["chunks"]["failed"] == 1
    chunks = {c["id"]: c for c in await (await client.get(
        f"{P}/projects/{pid}/conversations/{cid}/chunks")).json()}
    assert chunks[bad]["status"] == "failed"
    assert "cannot be decoded" in chunks[bad]["error"]
    assert "garden" in chunks[good]["transcript"].lower()
    doc = json.loads(await read_object(s3, settings, transcript_keys(cid)[0]))
    assert [(c["id"], c["status"], bool(c["error"])) for c in doc["chunks"]] == [
        (good, "transcribed", False), (bad, "failed", True)]
    assert "garden" in doc["text"].lower()


@pytest.mark.slow
async def test_a_worker_killed_mid_chunk_leaves_it_to_another_worker(
    client: ApiClient, run_workers: RunWorkers, local_transcriber: LocalWhisperTranscriber,
    store: ConversationStore, redis: RedisClient, api_env: dict[str, str],
) -> None:
    project, conversation = await open_conversation(client)
    pid, cid = project["id"], conversation["id"]
    chunk = await upload(client, cid, SPEECH / "03-mountain.webm", "audio/webm",
                         "2026-01-01T10:00:00.000Z")
    assert (await client.post(f"{P}/conversations/{cid}/finish")).status == 200

    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(ROOT / "tests" / "transcription_worker_proc.py"),
        cwd=ROOT, env={**os.environ, **api_env},
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        pid_seen = await wait_until(lambda: redis.get("echo:{test}:transcribing"),
                                    timeout_s=DEADLINE_S, interval_s=0.1,
                                    message="the doomed worker did not start transcribing")
        assert pid_seen == str(proc.pid)
        transcribing = await store.get_chunk(cid, chunk)
        assert transcribing is not None and transcribing["status"] == "transcribing"
        proc.send_signal(signal.SIGKILL)
        await asyncio.wait_for(proc.wait(), timeout=30)
    finally:
        if proc.returncode is None:
            proc.kill()
            await asyncio.wait_for(proc.wait(), timeout=30)

    async with run_workers(local_transcriber):
        view = await finalized_view(client, pid, cid)
    assert view["processing"]["chunks"]["transcribed"] == 1
    transcribed = await store.get_chunk(cid, chunk)
    assert transcribed is not None and "mountain" in transcribed["transcript"].lower()


# --- with a stand-in transcriber


class FailingTranscriber:
    """An unexpected error (a bug): the attempts path (transient: test_churn_transcription)."""

    name = "failing"

    def __init__(self) -> None:
        self.calls = 0

    async def transcribe(self, path: Path, *, language: str | None,
                         content_type: str) -> TranscriptResult:
        self.calls += 1
        raise RuntimeError("transcriber bug")


async def test_a_chunk_failing_past_the_attempts_is_failed_and_finalization_goes_on(
    store: ConversationStore, s3: S3Client, settings: Settings, redis: RedisClient,
    run_workers: RunWorkers,
) -> None:
    cid, [chunk] = await conversation_with_chunks(store, s3, settings, 1)
    publisher = publisher_for(redis, settings)
    await events.publish(publisher, events.CHUNK_UPLOADED, chunk)
    assert not (await store.finish(cid)).finalizable
    transcriber = FailingTranscriber()
    async with run_workers(transcriber):
        await until_finalized(store, cid, message="not finalized")
    failed = await store.get_chunk(cid, chunk.chunk_id)
    assert failed is not None and failed["status"] == "failed"
    assert failed["error"] == ("transcription failed after 3 attempts, the last ended by a "
                               "handler error: RuntimeError: transcriber bug")
    assert transcriber.calls == settings.transcription_max_attempts
    assert await redis.xlen("echo:{transcription}:dead") == 0


class FlakyTranscriber:
    """The provider unreachable once, then fine."""

    name = "flaky"

    def __init__(self) -> None:
        self.calls = 0

    async def transcribe(self, path: Path, *, language: str | None,
                         content_type: str) -> TranscriptResult:
        self.calls += 1
        if self.calls == 1:
            raise TransientTranscriptionError("provider unreachable")
        return TranscriptResult(text="back again", provider="flaky")


async def test_a_replayed_event_opens_its_own_transient_retry_window(
    store: ConversationStore, s3: S3Client, settings: Settings, redis: RedisClient,
    run_workers: RunWorkers,
) -> None:
    """A dead letter keeps the payload its deferrals wrote (the window's start, a day ago
    here); replayed, it is a run with no deferral yet, so a transient error is retried
    within a new TRANSCRIPTION_RETRY_WINDOW_S instead of failing the chunk at once."""
    cid, [chunk] = await conversation_with_chunks(store, s3, settings, 1)
    day_ago_ms = int((time.time() - 86400) * 1000)
    await publisher_for(redis, settings).publish(
        events.TRANSCRIPTION, events.CHUNK_UPLOADED.name,
        {**chunk.as_payload(), TRANSIENT_SINCE_FIELD: day_ago_ms},
        idempotency_key=f"transcribe:{chunk.chunk_id}",
    )
    transcriber = FlakyTranscriber()
    async with run_workers(transcriber):
        await wait_until(lambda: store.get_chunk(cid, chunk.chunk_id),
                         until=lambda c: c and c["status"] in ("transcribed", "failed"),
                         timeout_s=DEADLINE_S)
    ended = await store.get_chunk(cid, chunk.chunk_id)
    assert ended is not None
    assert (ended["status"], ended["transcript"], transcriber.calls) == (
        "transcribed", "back again", 2), ended.get("error")
