"""The conversation store: key layout, atomic transitions, expiry of issued chunks, finalizable."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any, cast

import pytest
from waiting import wait_until

from config import Settings
from storage.conversations import (
    ChunkKeyMismatch,
    ChunkNotFound,
    ConversationNotFound,
    ConversationStore,
)
from storage.redis_autopipeline import open_autopipeline
from storage.redis_client import RedisClient
from streams.names import StreamNames
from streams.publisher import Publisher

T = "2026-01-01T10:00:00Z"


@pytest.fixture(params=["pool", "autopipeline"])
async def store(
    request: pytest.FixtureRequest, settings: Settings, redis: RedisClient
) -> AsyncIterator[ConversationStore]:
    """Every test runs twice: scripts through the pool, and through the auto-pipeline."""
    if request.param == "pool":
        yield ConversationStore(redis, key_prefix="echo")
        return
    async with open_autopipeline(settings, redis) as pipeline:
        assert pipeline is not None
        yield ConversationStore(redis, key_prefix="echo", autopipeline=pipeline)


async def _conversation(store: ConversationStore) -> str:
    project = await store.create_project({"name": "p"})
    conversation = await store.create_conversation(project["id"], {"title": "t"})
    return str(conversation["id"])


async def _listed_chunk(store: ConversationStore, cid: str, *, verified: bool = True) -> str:
    chunk_id = str(uuid.uuid4())
    await store.issue_chunk(cid, chunk_id, path=f"k/{chunk_id}", filename="a.webm",
                            content_type="audio/webm", ttl_s=60)
    await store.confirm_chunk(cid, chunk_id, path=f"k/{chunk_id}", timestamp=T, source="PORTAL_AUDIO",
                              verified=verified)
    return chunk_id


async def test_all_keys_of_a_conversation_share_one_hash_tag(store: ConversationStore, redis: RedisClient) -> None:
    cid = await _conversation(store)
    await _listed_chunk(store, cid)
    await store.add_text_chunk(cid, content="hi", timestamp=T, source="PORTAL_TEXT")
    keys = [k async for k in redis.scan_iter(match=f"*{cid}*")]
    assert len(keys) >= 4
    assert all(f"{{c:{cid}}}" in k for k in keys if not k.endswith((":conversations", ":idle")))


async def test_an_issued_chunk_is_unlisted_and_expires_with_its_url(store: ConversationStore, redis: RedisClient) -> None:
    cid = await _conversation(store)
    chunk_id = str(uuid.uuid4())
    await store.issue_chunk(cid, chunk_id, path="k", filename="a", content_type="audio/webm", ttl_s=0.2)
    issued = await store.get_chunk(cid, chunk_id)
    assert issued is not None and issued["status"] == "issued"
    assert await store.list_chunks(cid) == []
    assert await store.all_chunks_done(cid)
    await wait_until(lambda: store.get_chunk(cid, chunk_id), until=lambda chunk: chunk is None,
                     timeout_s=10, message="the issued chunk did not expire")
    with pytest.raises(ChunkNotFound):
        await store.confirm_chunk(cid, chunk_id, path="k", timestamp=T, source="x", verified=True)


async def test_confirmation_is_idempotent_and_checks_the_key(store: ConversationStore, redis: RedisClient) -> None:
    cid = await _conversation(store)
    chunk_id = str(uuid.uuid4())
    await store.issue_chunk(cid, chunk_id, path="k/1", filename="a", content_type="audio/webm", ttl_s=60)
    with pytest.raises(ChunkKeyMismatch):
        await store.confirm_chunk(cid, chunk_id, path="k/2", timestamp=T, source="x", verified=False)
    results = await asyncio.gather(*(
        store.confirm_chunk(cid, chunk_id, path="k/1", timestamp=T, source="x", verified=False)
        for _ in range(20)
    ))
    assert sum(r.created for r in results) == 1
    assert {r.status for r in results} == {"pending_verification"}
    assert await redis.ttl(store.chunk_key(cid, chunk_id)) == -1  # no longer expires
    conversation = await store.get_conversation(cid)
    assert conversation is not None and conversation["open_chunks"] == 1


async def test_transitions_follow_the_chunk_state_machine(store: ConversationStore) -> None:
    cid = await _conversation(store)
    chunk_id = await _listed_chunk(store, cid, verified=False)
    assert (await store.mark_transcribing(cid, chunk_id)).outcome == "invalid"  # not uploaded yet
    assert (await store.mark_uploaded(cid, chunk_id, size=10)).changed
    assert (await store.mark_uploaded(cid, chunk_id)).outcome == "same"
    assert (await store.mark_transcribing(cid, chunk_id)).changed
    done = await store.mark_transcribed(cid, chunk_id, transcript="hello")
    assert done.changed and not done.finalizable  # not finished yet
    assert (await store.mark_failed(cid, chunk_id, error="late")).outcome == "invalid"
    chunk = await store.get_chunk(cid, chunk_id)
    assert chunk is not None and (chunk["status"], chunk["transcript"], chunk["size"]) == ("transcribed", "hello", 10)
    assert await store.all_chunks_done(cid)


async def test_finalizable_flips_once_when_the_last_open_chunk_ends_after_finish(store: ConversationStore) -> None:
    cid = await _conversation(store)
    a = await _listed_chunk(store, cid)
    b = await _listed_chunk(store, cid, verified=False)
    finish = await store.finish(cid)
    assert finish.changed and not finish.finalizable
    assert not (await store.finish(cid)).changed
    assert not (await store.mark_transcribed(cid, a, transcript="x")).finalizable
    results = await asyncio.gather(*(store.mark_failed(cid, b, error="upload not found") for _ in range(10)))
    assert sum(r.changed for r in results) == 1
    assert [r.finalizable for r in results if r.changed] == [True]
    assert await store.mark_finalized(cid, merged_transcript="x", summary="s") == "ok"
    assert await store.mark_finalized(cid, merged_transcript="x", summary="s") == "already"
    conversation = await store.get_conversation(cid)
    assert conversation is not None
    assert conversation["is_all_chunks_transcribed"] and conversation["status"] == "finalized"
    assert conversation["summary"] == "s"


async def test_deleting_an_open_chunk_can_make_the_conversation_finalizable(store: ConversationStore) -> None:
    cid = await _conversation(store)
    chunk_id = await _listed_chunk(store, cid, verified=False)
    await store.finish(cid)
    assert not await store.is_finalizable(cid)
    assert await store.delete_chunk(cid, chunk_id)
    assert not await store.delete_chunk(cid, chunk_id)
    assert await store.is_finalizable(cid)


async def test_a_finished_conversation_still_takes_a_late_chunk(store: ConversationStore) -> None:
    """The portal's last upload may land after finish (or the idle auto-finish): it is kept,
    and confirming it makes the conversation wait for that chunk before it is finalized."""
    cid = await _conversation(store)
    await store.finish(cid)
    assert await store.is_finalizable(cid)
    late = str(uuid.uuid4())
    await store.issue_chunk(cid, late, path="k", filename="a", content_type="audio/webm", ttl_s=5)
    await store.confirm_chunk(cid, late, path="k", timestamp="2026-01-01T00:00:00Z",
                              source="PORTAL_AUDIO", verified=True)
    assert not await store.is_finalizable(cid)
    await store.mark_transcribing(cid, late)
    assert (await store.mark_transcribed(cid, late, transcript="late words")).finalizable


async def test_unknown_conversations_issue_no_urls(store: ConversationStore) -> None:
    with pytest.raises(ConversationNotFound):
        await store.issue_chunk(str(uuid.uuid4()), str(uuid.uuid4()), path="k", filename="a",
                                content_type="audio/webm", ttl_s=5)


async def test_idle_conversations_are_finished_once_even_by_concurrent_sweepers(store: ConversationStore) -> None:
    idle = await _conversation(store)
    finished: list[str] = []

    async def five_sweepers_at_once() -> bool:
        rounds = await asyncio.gather(*(store.finish_idle(0.2) for _ in range(5)))
        finished.extend(cid for r in rounds for cid, _ in r)
        return idle in finished

    await wait_until(five_sweepers_at_once, timeout_s=10, interval_s=0.1,
                     message="the idle conversation was never finished")
    assert finished.count(idle) == 1
    conversation = await store.get_conversation(idle)
    assert conversation is not None and conversation["finish_reason"] == "idle"


async def test_an_idle_conversation_stays_in_the_idle_set_until_its_finalize_event_is_stored(
    store: ConversationStore, redis: RedisClient, settings: Settings
) -> None:
    """One failed publication in a sweep loses no finalize event: the next sweep retries."""
    from gateway.idle_finish import sweep_idle_once

    settings = dataclasses.replace(settings, idle_finish_after_s=1)
    first, second = await _conversation(store), await _conversation(store)
    publisher = _FailingOnce(redis, StreamNames(settings.redis_key_prefix))
    await asyncio.sleep(1.1)  # the behaviour under test: both become idle (idle_finish_after_s=1)
    with pytest.raises(ConnectionError):
        await sweep_idle_once(store, publisher, settings.idle_finish_after_s)
    assert await redis.zcard(store.idle_key()) == 2  # nothing published, nothing forgotten

    async def sweep_again() -> int:
        await sweep_idle_once(store, publisher, settings.idle_finish_after_s)
        return int(await redis.zcard(store.idle_key()))

    await wait_until(sweep_again, until=lambda idle: idle == 0, timeout_s=10, interval_s=0.2,
                     message="the idle set was not emptied")
    entries = cast(list[tuple[str, dict[str, str]]], await redis.xrange("echo:{transcription}"))
    finalize = [json.loads(f["payload"])["conversation_id"] for _, f in entries]
    assert sorted(finalize) == sorted([first, second])
    for cid in (first, second):
        conversation = await store.get_conversation(cid)
        assert conversation is not None and conversation["finish_reason"] == "idle"


class _FailingOnce(Publisher):
    """The first publication fails (a Redis hiccup on the XADD)."""

    failed = False

    async def publish(self, *args: Any, **kwargs: Any) -> str:
        if not self.failed:
            self.failed = True
            raise ConnectionError("XADD failed")
        return await super().publish(*args, **kwargs)


async def test_deleting_a_chunk_of_a_finalized_conversation_reopens_it(
    store: ConversationStore, redis: RedisClient
) -> None:
    """The stored transcript still holds the deleted chunk: the conversation is finalized again."""
    cid = await _conversation(store)
    await store.add_text_chunk(cid, content="kept", timestamp=T, source="PORTAL_TEXT")
    gone, _ = await store.add_text_chunk(cid, content="gone", timestamp=T, source="PORTAL_TEXT")
    await store.finish(cid)
    assert await store.mark_finalized(cid, merged_transcript="kept\n\ngone", summary=None) == "ok"
    generation = int(cast(str, await redis.hget(store.conversation_key(cid), "final_gen")))
    assert await store.delete_chunk(cid, gone["id"])
    conversation = await store.get_conversation(cid)
    assert conversation is not None and conversation["finalized_at"] is None
    assert not conversation["is_all_chunks_transcribed"]
    final_gen = cast(str, await redis.hget(store.conversation_key(cid), "final_gen"))
    assert int(final_gen) == generation + 1
    assert await store.is_finalizable(cid)
    assert await store.mark_finalized(cid, merged_transcript="kept", summary=None) == "ok"


async def test_activity_keeps_a_conversation_open(store: ConversationStore) -> None:
    cid = await _conversation(store)
    await store.add_text_chunk(cid, content="still here", timestamp=T, source="PORTAL_TEXT")
    assert await store.finish_idle(3600) == []
    conversation = await store.get_conversation(cid)
    assert conversation is not None and not conversation["is_finished"]


async def test_issuing_with_the_limit_checks_the_project_and_consumes_nothing_when_refused(
    store: ConversationStore, redis: RedisClient
) -> None:
    from storage.conversations import ProjectClosed
    from storage.ratelimit import SlidingWindowLimiter

    project = await store.create_project({"name": "p"})
    cid = (await store.create_conversation(project["id"], {"title": "t"}))["id"]
    limiter = SlidingWindowLimiter(
        redis, name="upload-url", limit=2, window_s=60,
        key_fn=lambda c: store.conversation_limit_key(c, "upload-url"),
    )

    async def issue() -> bool:
        decision = await store.issue_chunk_limited(
            cid, str(uuid.uuid4()), path="k", filename="a", content_type="audio/webm",
            ttl_s=60, limiter=limiter, project_id=project["id"],
        )
        return decision.allowed

    assert [await issue(), await issue(), await issue()] == [True, True, False]
    assert await redis.zcard(limiter.key(cid)) == 2
    assert len([k async for k in redis.scan_iter(match=f"*{{c:{cid}}}:chunk:*")]) == 2
    await store.update_project(project["id"], {"is_conversation_allowed": False})
    with pytest.raises(ProjectClosed):
        await issue()


async def test_a_finalization_claim_is_held_by_one_event_and_commits_one_generation(
    store: ConversationStore,
) -> None:
    cid = await _conversation(store)
    assert (await store.begin_finalization(cid, "1-0", 30)).outcome == "not_ready"
    await store.add_text_chunk(cid, content="words", timestamp=T, source="PORTAL_TEXT")
    await store.finish(cid)
    claim = await store.begin_finalization(cid, "1-0", 30)
    assert claim.outcome == "claimed"
    assert (await store.begin_finalization(cid, "2-0", 30)).outcome == "busy"
    assert await store.check_finalization(cid, "2-0", claim.generation, 30) == "lost"
    assert await store.check_finalization(cid, "1-0", claim.generation, 30) == "ok"
    committed = await store.commit_finalization(
        cid, "1-0", claim.generation, merged_transcript="words", transcript_json_key="j",
        transcript_text_key="t", failed_chunks=0,
    )
    assert committed == "ok"
    done = await store.begin_finalization(cid, "2-0", 30)
    assert (done.outcome, done.generation, done.done_token) == ("done", claim.generation, "1-0")
    assert not done.summary_recorded
    await store.record_summary_requested(cid, claim.generation)
    assert (await store.begin_finalization(cid, "1-0", 30)).summary_recorded
    state = await store.processing_state(cid)
    assert state.finalizations == 1 and state.finalized_ms is not None
    assert state.chunk_counts["transcribed"] == 1 and state.summary_requested
    assert (state.transcript_json_key, state.transcript_text_key) == ("j", "t")
    assert not state.summary_ready
    unknown = await store.begin_finalization(str(uuid.uuid4()), "1-0", 30)
    assert unknown.outcome == "no_conversation"


async def test_a_chunk_listed_during_finalization_makes_the_commit_stale(
    store: ConversationStore,
) -> None:
    cid = await _conversation(store)
    await store.add_text_chunk(cid, content="first", timestamp=T, source="PORTAL_TEXT")
    await store.finish(cid)
    claim = await store.begin_finalization(cid, "1-0", 30)
    await store.add_text_chunk(cid, content="second", timestamp=T, source="PORTAL_TEXT")
    committed = await store.commit_finalization(
        cid, "1-0", claim.generation, merged_transcript="first", transcript_json_key="j",
        transcript_text_key="t", failed_chunks=0,
    )
    assert committed == "stale"
    again = await store.begin_finalization(cid, "2-0", 30)  # the stale claim was released
    assert again.outcome == "claimed" and again.generation == claim.generation + 1


async def test_a_summary_is_stored_once_and_only_for_the_current_generation(
    store: ConversationStore,
) -> None:
    missing = await store.summary_inputs(str(uuid.uuid4()))
    assert missing.skip_reason(0) == "no_conversation"
    cid = await _conversation(store)
    await store.add_text_chunk(cid, content="words", timestamp=T, source="PORTAL_TEXT")
    await store.finish(cid)
    claim = await store.begin_finalization(cid, "1-0", 30)
    gen = claim.generation
    await store.commit_finalization(
        cid, "1-0", gen, merged_transcript="words", transcript_json_key="j",
        transcript_text_key="t", failed_chunks=0,
    )
    inputs = await store.summary_inputs(cid)
    assert (inputs.skip_reason(gen - 1), inputs.skip_reason(gen)) == ("stale", None)
    assert inputs.merged_transcript == "words"
    summary = {"text": "s", "provider": "offline", "model": "m", "s3_key": "k"}
    assert await store.store_summary(cid, gen - 1, **summary) == "stale"
    assert await store.store_summary(cid, gen, **summary) == "ok"
    assert await store.store_summary(cid, gen, **summary) == "already"
    assert (await store.summary_inputs(cid)).skip_reason(gen) == "already"
    assert (await store.processing_state(cid)).summary_ready
    conversation = await store.get_conversation(cid)
    assert conversation is not None and conversation["summary"] == "s"
