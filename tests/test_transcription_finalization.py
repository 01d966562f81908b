"""Finalization: exactly once however finish and the last chunks race, again when a chunk
comes or goes afterwards, and never over a newer transcript.

The ``transcription`` group runs in this process with a stand-in transcriber;
Redis and S3 are the session's real servers.
"""

from __future__ import annotations

import asyncio
import json
import random
from typing import Any

import pytest
from api_support import ApiClient, P
from prometheus_client import CollectorRegistry
from transcription_support import (
    DEADLINE_S,
    OVERRIDES,
    RunWorkers,
    conversation_with_chunks,
    is_finalized,
    read_object,
    summary_requests,
    until_drained,
    until_finalized,
    workers_runner,
)
from waiting import wait_until

from config import Settings
from events import catalogue as events
from events.catalogue import ChunkUpload, FinalizeRequest
from gateway.wiring import publisher_for
from storage.conversations import ConversationStore
from storage.redis_client import RedisClient
from storage.s3_client import S3Client
from streams.deadletters import DeadLetters
from streams.names import StreamNames
from streams.publisher import Publisher
from transcription.base import NoopTranscriber
from transcription.finalization import Finalizer, transcript_keys
from transcription.metrics import TranscriptionMetrics

pytestmark = pytest.mark.env(**OVERRIDES)


@pytest.fixture(scope="module")
def bucket_name() -> str:
    """One bucket for the module: the session's SeaweedFS has room for few (``-volume.max``)."""
    return "test-transcription-finalization"


async def until_chunks_ended(store: ConversationStore, cid: str, count: int) -> None:
    """Until at least ``count`` chunks of ``cid`` are transcribed or failed."""

    async def ended() -> int:
        view = await store.list_chunks(cid)
        return sum(c["status"] in ("transcribed", "failed") for c in view)

    await wait_until(ended, until=lambda n: n >= count, timeout_s=DEADLINE_S, interval_s=0.1,
                     message="the chunks did not end")


async def finish_while_chunks_end(
    client: ApiClient, publisher: Publisher, store: ConversationStore,
    cid: str, chunks: list[ChunkUpload], finish_after: int,
) -> None:
    """All chunks announced; once ``finish_after`` of them ended, the conversation is finished
    through the API, twice at once, plus stray duplicate finalize events."""
    await asyncio.gather(*(events.publish(publisher, events.CHUNK_UPLOADED, c) for c in chunks))
    await until_chunks_ended(store, cid, finish_after)
    await asyncio.gather(
        client.post(f"{P}/conversations/{cid}/finish"),
        client.post(f"{P}/conversations/{cid}/finish"),
        *(events.publish(publisher, events.CONVERSATION_FINALIZE, FinalizeRequest(cid))
          for _ in range(3)),
    )


@pytest.mark.slow
async def test_fifty_chunks_ending_together_with_finish_in_the_middle_finalize_exactly_once(
    store: ConversationStore, s3: S3Client, settings: Settings, redis: RedisClient,
    run_workers: RunWorkers, client: ApiClient,
) -> None:
    publisher = publisher_for(redis, settings)
    rounds = 20
    async with run_workers(NoopTranscriber("words"), processes=2):
        for round_no in range(rounds):
            cid, chunks = await conversation_with_chunks(store, s3, settings, 50)
            finish_after = random.randint(0, 50)
            await finish_while_chunks_end(client, publisher, store, cid, chunks, finish_after)
            await until_finalized(store, cid, message=f"round {round_no} was not finalized")
            await until_drained(redis)
            conversation = await redis.hgetall(store.conversation_key(cid))
            assert conversation["finalizations"] == "1", (round_no, finish_after)
            assert len(await summary_requests(redis, cid)) == 1
            doc = json.loads(await read_object(s3, settings, transcript_keys(cid)[0]))
            assert len(doc["chunks"]) == 50 and doc["counts"]["transcribed"] == 50


async def test_a_chunk_confirmed_after_finalization_reopens_and_refinalizes(
    store: ConversationStore, s3: S3Client, settings: Settings, redis: RedisClient,
    run_workers: RunWorkers,
) -> None:
    cid, (first, late) = await conversation_with_chunks(store, s3, settings, 2, confirm_now=False)
    publisher = publisher_for(redis, settings)
    await store.confirm_chunk(cid, first.chunk_id, path=first.key, source="PORTAL_AUDIO",
                              timestamp="2026-01-01T10:00:00Z", verified=True)
    await events.publish(publisher, events.CHUNK_UPLOADED, first)
    async with run_workers(NoopTranscriber("first words")):
        await store.finish(cid)
        await events.publish(publisher, events.CONVERSATION_FINALIZE, FinalizeRequest(cid))
        await until_finalized(store, cid, message="no first finalization")
        # The late chunk was issued before finish and confirmed after finalization.
        await store.confirm_chunk(cid, late.chunk_id, path=late.key, source="PORTAL_AUDIO",
                                  timestamp="2026-01-01T10:00:30Z", verified=True)
        reopened = await store.get_conversation(cid)
        assert reopened is not None
        assert reopened["finalized_at"] is None and not reopened["is_all_chunks_transcribed"]
        await events.publish(publisher, events.CHUNK_UPLOADED, late)
        await until_finalized(store, cid, message="no second finalization")
        await until_drained(redis)
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
    run_workers: RunWorkers, client: ApiClient,
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
        await until_finalized(store, cid, message="no first finalization")
        resp = await client.delete(f"{P}/projects/{project['id']}/conversations/{cid}"
                                   f"/chunks/{gone['id']}")
        assert resp.status == 200, await resp.text()
        await wait_until(finalizations, timeout_s=20, interval_s=0.1,
                         message="no second finalization")
        await until_drained(redis)
    text = (await read_object(s3, settings, transcript_keys(cid)[1])).decode()
    assert text == "kept words\n"
    assert [e["idem"] for e in await summary_requests(redis, cid)] == [
        f"summary:{cid}:2", f"summary:{cid}:3"]


async def test_a_dead_lettered_finalize_event_replayed_while_its_claim_lives_finalizes_once(
    store: ConversationStore, s3: S3Client, settings: Settings, redis: RedisClient,
    api_env: dict[str, str],
) -> None:
    """The dead run's claim outlives it (FINALIZATION_CLAIM_S); the replay is the same event
    (same token), so it takes the claim over instead of being turned away as another's."""
    broken = Settings.from_env({**api_env, "STREAM_MAX_DELIVERIES": "2",
                                "S3_BUCKET": "no bucket here"})  # every S3 write fails
    publisher = publisher_for(redis, settings)
    cid, _ = await conversation_with_chunks(store, s3, settings, 0)
    await store.finish(cid)
    await events.publish(publisher, events.CONVERSATION_FINALIZE, FinalizeRequest(cid))
    dead = DeadLetters(redis, StreamNames("echo"))
    async with workers_runner(broken, redis, s3)(NoopTranscriber("words")):
        await wait_until(lambda: dead.list(events.TRANSCRIPTION),
                         until=lambda page: page.letters, timeout_s=DEADLINE_S)
    [letter] = (await dead.list(events.TRANSCRIPTION)).letters
    assert not await is_finalized(store, cid)
    async with workers_runner(settings, redis, s3)(NoopTranscriber("words")):
        assert await dead.replay(events.TRANSCRIPTION, letter.id)
        await until_finalized(store, cid, message="the replayed finalize event was dropped")
        await until_drained(redis)
    conversation = await redis.hgetall(store.conversation_key(cid))
    assert conversation["finalizations"] == "1"
    assert len(await summary_requests(redis, cid)) == 1
