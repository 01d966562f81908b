"""Real speech to merged transcript and summary request, exactly once.

Uploads go the portal's way (get-upload-url, presigned POST to SeaweedFS,
confirm); the ``transcription`` group runs in this process with the real
faster-whisper model (or a no-op transcriber where speech is beside the
point); Redis and S3 are the session's real servers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from api_support import (  # noqa: F401  (fixtures)
    P,
    api_env,
    confirm,
    get_upload_url,
    make_client,
    open_conversation,
    post_to_s3,
)
from prometheus_client import CollectorRegistry
from waiting import wait_until

from config import Settings
from events import catalogue as events
from events.catalogue import ChunkUpload, FinalizeRequest
from gateway.wiring import publisher_for, streams_config
from storage.conversations import ConversationStore
from storage.redis_client import RedisClient
from storage.s3_client import S3Client
from streams.runtime import ConsumerRuntime
from transcription.base import NoopTranscriber, Transcriber, TranscriptResult
from transcription.finalization import transcript_keys
from transcription.lifecycle import TranscriptionService, make_bound, transcription_group_for
from transcription.local_provider import LocalWhisperTranscriber, packaged_model_dir
from transcription.metrics import TranscriptionMetrics

SPEECH = Path(__file__).parent / "fixtures" / "speech"
ROOT = Path(__file__).resolve().parent.parent
#: Short leases so that a killed worker's chunk moves on quickly; few attempts.
OVERRIDES = {
    "STREAM_LEASE_S": "2", "TRANSCRIPTION_MAX_ATTEMPTS": "3", "TRANSCRIPTION_CONCURRENCY": "4",
    "SHUTDOWN_GRACE_S": "1",
}
DEADLINE_S = 120.0


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


@pytest.fixture(scope="module")
def bucket_name() -> str:
    """One bucket for the module: the session's SeaweedFS has room for few (``-volume.max``)."""
    return f"transcription-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def settings(api_env: dict[str, str]) -> Settings:  # noqa: F811  (the module's own settings)
    return Settings.from_env({**api_env, **OVERRIDES})


@pytest.fixture
async def client(make_client: Callable[..., Any]) -> Any:  # noqa: F811
    return await make_client(**OVERRIDES)


@pytest.fixture
def store(redis: RedisClient) -> ConversationStore:
    return ConversationStore(redis)


Runner = Callable[[Transcriber], contextlib.AbstractAsyncContextManager[TranscriptionService]]


@pytest.fixture
def run_workers(settings: Settings, redis: RedisClient, s3: S3Client) -> Runner:
    """``async with run_workers(transcriber, processes=n)``: n consumers of the group here."""

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

    return run  # type: ignore[return-value]


@pytest.fixture
def local_transcriber(whisper: tuple[Any, ThreadPoolExecutor], settings: Settings,
                      redis: RedisClient) -> LocalWhisperTranscriber:
    model, executor = whisper
    metrics = TranscriptionMetrics(CollectorRegistry())
    return LocalWhisperTranscriber(model, executor, bound=make_bound(settings, redis, metrics),
                                   metrics=metrics)


async def upload(client: Any, cid: str, path: Path, content_type: str, timestamp: str) -> str:
    """The portal's upload of one standalone chunk file; returns the chunk id."""
    grant = await get_upload_url(client, cid, filename=path.name, content_type=content_type)
    assert (await post_to_s3(grant, path.read_bytes())).status == 204
    resp = await confirm(client, cid, grant, timestamp=timestamp)
    assert resp.status == 200, await resp.text()
    return str(grant["chunk_id"])


async def conversation_view(client: Any, pid: str, cid: str) -> dict[str, Any]:
    resp = await client.get(f"{P}/projects/{pid}/conversations/{cid}")
    assert resp.status == 200
    return dict(await resp.json())


async def finalized_view(client: Any, pid: str, cid: str) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        view = await conversation_view(client, pid, cid)
        return view if view["processing"]["finalized_at"] else None

    return dict(await wait_until(check, timeout_s=DEADLINE_S, interval_s=0.1,
                                 message=f"conversation {cid} was not finalized"))


async def read_object(s3: S3Client, settings: Settings, key: str) -> bytes:
    response = await s3.get_object(Bucket=settings.s3_bucket, Key=key)
    async with response["Body"] as body:
        return bytes(await body.read())


async def summary_requests(redis: RedisClient, cid: str) -> list[dict[str, Any]]:
    entries = await redis.xrange("echo:{llm}")
    events = [{"type": f["type"], "idem": f["idem"], "payload": json.loads(f["payload"])}
              for _, f in entries]
    return [e for e in events if e["type"] == "conversation.summarize"
            and e["payload"]["conversation_id"] == cid]


# --- real speech


@pytest.mark.slow
async def test_real_speech_is_transcribed_merged_in_timestamp_order_and_summarised_once(
    client: Any, run_workers: Runner, local_transcriber: LocalWhisperTranscriber,
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
    client: Any, run_workers: Runner, local_transcriber: LocalWhisperTranscriber,
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
    client: Any, run_workers: Runner, local_transcriber: LocalWhisperTranscriber,
    redis: RedisClient, settings: Settings, api_env: dict[str, str],  # noqa: F811
) -> None:
    project, conversation = await open_conversation(client)
    pid, cid = project["id"], conversation["id"]
    chunk = await upload(client, cid, SPEECH / "03-mountain.webm", "audio/webm",
                         "2026-01-01T10:00:00.000Z")
    assert (await client.post(f"{P}/conversations/{cid}/finish")).status == 200

    proc = subprocess.Popen(  # noqa: ASYNC220  (started once; nothing waits on it here)
        [sys.executable, str(ROOT / "tests" / "transcription_worker_proc.py")],
        cwd=ROOT, env={**os.environ, **api_env, **OVERRIDES}, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        pid_seen = await wait_until(lambda: redis.get("echo:{test}:transcribing"),
                                    timeout_s=DEADLINE_S, interval_s=0.1,
                                    message="the doomed worker did not start transcribing")
        assert int(pid_seen) == proc.pid
        store = ConversationStore(redis)
        assert (await store.get_chunk(cid, chunk))["status"] == "transcribing"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)

    async with run_workers(local_transcriber):
        view = await finalized_view(client, pid, cid)
    assert view["processing"]["chunks"]["transcribed"] == 1
    transcript = (await ConversationStore(redis).get_chunk(cid, chunk))["transcript"]
    assert "mountain" in transcript.lower()


# --- pipeline behaviour with stand-in transcribers


class FailingTranscriber:
    """An unexpected error (a bug): the attempts path (transient: test_churn_transcription)."""

    name = "failing"

    def __init__(self) -> None:
        self.calls = 0

    async def transcribe(self, path: Path, *, language: str | None,
                         content_type: str) -> TranscriptResult:
        self.calls += 1
        raise RuntimeError("transcriber bug")


async def _conversation_with_chunks(
    store: ConversationStore, s3: S3Client, settings: Settings, count: int,
    *, confirm_now: bool = True,
) -> tuple[str, list[ChunkUpload]]:
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


async def test_a_chunk_failing_past_the_attempts_is_failed_and_finalization_goes_on(
    store: ConversationStore, s3: S3Client, settings: Settings, redis: RedisClient,
    run_workers: Runner,
) -> None:
    cid, [chunk] = await _conversation_with_chunks(store, s3, settings, 1)
    publisher = publisher_for(redis, settings)
    await events.publish(publisher, events.CHUNK_UPLOADED, chunk)
    assert not (await store.finish(cid)).finalizable
    transcriber = FailingTranscriber()
    async with run_workers(transcriber):  # type: ignore[arg-type]
        await wait_until(lambda: _finalized(store, cid), timeout_s=DEADLINE_S, interval_s=0.1,
                         message="not finalized")
    failed = await store.get_chunk(cid, chunk.chunk_id)
    assert failed["status"] == "failed"
    assert failed["error"] == ("transcription failed after 3 attempts, the last ended by a "
                               "handler error: RuntimeError: transcriber bug")
    assert transcriber.calls == settings.transcription_max_attempts
    assert await redis.xlen("echo:{transcription}:dead") == 0


async def _finalized(store: ConversationStore, cid: str) -> bool:
    conversation = await store.get_conversation(cid)
    return bool(conversation and conversation["finalized_at"])


@pytest.mark.slow
async def test_fifty_chunks_ending_together_with_finish_in_the_middle_finalize_exactly_once(
    store: ConversationStore, s3: S3Client, settings: Settings, redis: RedisClient,
    run_workers: Runner, client: Any,
) -> None:
    publisher = publisher_for(redis, settings)
    rounds = 20
    async with run_workers(NoopTranscriber("words"), processes=2):
        for round_no in range(rounds):
            cid, chunks = await _conversation_with_chunks(store, s3, settings, 50)
            finish_after = random.randint(0, 50)
            await asyncio.gather(*(events.publish(publisher, events.CHUNK_UPLOADED, c) for c in chunks))

            async def ended() -> int:
                view = await store.list_chunks(cid)  # noqa: B023  (awaited in this round)
                return sum(c["status"] in ("transcribed", "failed") for c in view)

            await wait_until(ended, until=lambda n: n >= finish_after, timeout_s=DEADLINE_S,  # noqa: B023
                             interval_s=0.1, message="the chunks did not end")
            # finish through the API, twice at once, plus stray duplicate finalize events
            await asyncio.gather(
                client.post(f"{P}/conversations/{cid}/finish"),
                client.post(f"{P}/conversations/{cid}/finish"),
                *(events.publish(publisher, events.CONVERSATION_FINALIZE, FinalizeRequest(cid)) for _ in range(3)),
            )
            await wait_until(lambda: _finalized(store, cid), timeout_s=DEADLINE_S,  # noqa: B023
                             interval_s=0.1, message=f"round {round_no} was not finalized")
            await _drained(redis)
            conversation = await redis.hgetall(store.conversation_key(cid))
            assert conversation["finalizations"] == "1", (round_no, finish_after)
            assert len(await summary_requests(redis, cid)) == 1
            doc = json.loads(await read_object(s3, settings, transcript_keys(cid)[0]))
            assert len(doc["chunks"]) == 50 and doc["counts"]["transcribed"] == 50


async def _drained(redis: RedisClient) -> None:
    async def idle() -> bool:
        groups = await redis.xinfo_groups("echo:{transcription}")
        return all(int(g["pending"]) == 0 and int(g.get("lag") or 0) == 0 for g in groups)

    await wait_until(idle, timeout_s=DEADLINE_S, interval_s=0.1,
                     message="the transcription stream did not drain")


async def test_a_chunk_confirmed_after_finalization_reopens_and_refinalizes(
    store: ConversationStore, s3: S3Client, settings: Settings, redis: RedisClient,
    run_workers: Runner,
) -> None:
    cid, (first, late) = await _conversation_with_chunks(store, s3, settings, 2, confirm_now=False)
    publisher = publisher_for(redis, settings)
    await store.confirm_chunk(cid, first.chunk_id, path=first.key, source="PORTAL_AUDIO",
                              timestamp="2026-01-01T10:00:00Z", verified=True)
    await events.publish(publisher, events.CHUNK_UPLOADED, first)
    async with run_workers(NoopTranscriber("first words")):
        await store.finish(cid)
        await events.publish(publisher, events.CONVERSATION_FINALIZE, FinalizeRequest(cid))
        await wait_until(lambda: _finalized(store, cid), timeout_s=DEADLINE_S, interval_s=0.1,
                         message="no first finalization")
        # The late chunk was issued before finish and confirmed after finalization.
        await store.confirm_chunk(cid, late.chunk_id, path=late.key, source="PORTAL_AUDIO",
                                  timestamp="2026-01-01T10:00:30Z", verified=True)
        reopened = await store.get_conversation(cid)
        assert reopened["finalized_at"] is None and not reopened["is_all_chunks_transcribed"]
        await events.publish(publisher, events.CHUNK_UPLOADED, late)
        await wait_until(lambda: _finalized(store, cid), timeout_s=DEADLINE_S, interval_s=0.1,
                         message="no second finalization")
        await _drained(redis)
    raw = await redis.hgetall(store.conversation_key(cid))
    assert raw["finalizations"] == "2"
    text = (await read_object(s3, settings, transcript_keys(cid)[1])).decode()
    assert text == "first words\n\nfirst words\n"
    assert [e["idem"] for e in await summary_requests(redis, cid)] == [
        f"summary:{cid}:1", f"summary:{cid}:2"]


async def test_a_finalizer_that_lost_its_claim_never_overwrites_a_newer_transcript(
    store: ConversationStore, s3: S3Client, settings: Settings, redis: RedisClient,
) -> None:
    """A finalizer slowed down between its writes (claim expired, a chunk added, a newer
    finalizer committed) must not write its older transcript over the newer one."""
    from transcription.finalization import Finalizer

    project = await store.create_project({"name": "p"})
    cid = (await store.create_conversation(project["id"], {"title": "t"}))["id"]
    await store.add_text_chunk(cid, content="old words", timestamp="2026-01-01T10:00:00Z",
                               source="PORTAL_TEXT")
    await store.finish(cid)
    publisher = publisher_for(redis, settings)

    def finalizer(s3_client: Any) -> Finalizer:
        return Finalizer(store=store, s3=s3_client, publisher=publisher,
                         settings=settings, metrics=TranscriptionMetrics(CollectorRegistry()))

    newer_outcomes: list[str] = []

    class StallsAfterTheFirstWrite:
        def __init__(self) -> None:
            self.puts = 0

        def __getattr__(self, name: str) -> Any:
            return getattr(s3, name)

        async def put_object(self, **kwargs: Any) -> Any:
            result = await s3.put_object(**kwargs)
            self.puts += 1
            if self.puts == 1:  # meanwhile, the world moves on
                await redis.hset(store.conversation_key(cid), "final_claim_until_ms", 0)
                await store.add_text_chunk(cid, content="new words",
                                           timestamp="2026-01-01T10:00:30Z", source="PORTAL_TEXT")
                newer_outcomes.append(await finalizer(s3).finalize(cid, "2-0"))
            return result

    slow = StallsAfterTheFirstWrite()
    assert await finalizer(slow).finalize(cid, "1-0") == "lost"
    assert newer_outcomes == ["finalized"]
    assert slow.puts == 1  # it saw that it lost the claim and wrote nothing more
    json_key, text_key = transcript_keys(cid)
    assert (await read_object(s3, settings, text_key)).decode() == "old words\n\nnew words\n"
    doc = json.loads(await read_object(s3, settings, json_key))
    assert doc["text"] == "old words\n\nnew words"


async def test_deleting_a_chunk_after_finalization_refinalizes_without_it(
    store: ConversationStore, s3: S3Client, settings: Settings, redis: RedisClient,
    run_workers: Runner, client: Any,
) -> None:
    project = await store.create_project({"name": "p"})
    cid = (await store.create_conversation(project["id"], {"title": "t"}))["id"]
    await store.add_text_chunk(cid, content="kept words", timestamp="2026-01-01T10:00:00Z",
                               source="PORTAL_TEXT")
    gone, _ = await store.add_text_chunk(cid, content="deleted words",
                                         timestamp="2026-01-01T10:00:30Z", source="PORTAL_TEXT")
    await store.finish(cid)
    publisher = publisher_for(redis, settings)

    async def finalizations() -> bool:
        raw = await redis.hgetall(store.conversation_key(cid))
        return raw.get("finalizations") == "2" and bool(raw.get("finalized_ms"))

    async with run_workers(NoopTranscriber("unused")):
        await events.publish(publisher, events.CONVERSATION_FINALIZE, FinalizeRequest(cid))
        await wait_until(lambda: _finalized(store, cid), timeout_s=DEADLINE_S, interval_s=0.1,
                         message="no first finalization")
        resp = await client.delete(f"{P}/projects/{project['id']}/conversations/{cid}"
                                   f"/chunks/{gone['id']}")
        assert resp.status == 200, await resp.text()
        await wait_until(finalizations, timeout_s=20, interval_s=0.1,
                         message="no second finalization")
        await _drained(redis)
    text = (await read_object(s3, settings, transcript_keys(cid)[1])).decode()
    assert text == "kept words\n"
    assert [e["idem"] for e in await summary_requests(redis, cid)] == [
        f"summary:{cid}:2", f"summary:{cid}:3"]
