"""The stuck-work sweeper finds work no event will move any more and re-drives it, once per
interval across every process, within a bounded cost per run.

The ``transcription`` group runs in this process with a stand-in transcriber; Redis and S3
are the session's real servers.
"""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry
from recovery_support import RECOVERY_OVERRIDES, make_sweeper, sample, sweeping
from transcription_support import (
    RunWorkers,
    conversation_with_chunks,
    is_finalized,
    until_drained,
    until_finalized,
)
from waiting import wait_until

from config import Settings
from events import catalogue as events
from gateway.wiring import publisher_for, streams_config
from storage.conversations import ConversationStore
from storage.redis_client import RedisClient
from storage.s3_client import S3Client
from storage.sweep_lease import SweepLease
from streams.runtime import ConsumerRuntime
from transcription.base import NoopTranscriber
from uploads.confirmation import upload_confirmation_group

pytestmark = pytest.mark.env(**RECOVERY_OVERRIDES)


@pytest.fixture(scope="module")
def bucket_name() -> str:
    """One bucket for the module: the session's SeaweedFS has room for few (``-volume.max``)."""
    return "test-recovery-sweeper"


async def chunk_status(store: ConversationStore, cid: str, chunk_id: str) -> tuple[str, str | None]:
    chunk = await store.get_chunk(cid, chunk_id)
    assert chunk is not None
    return chunk["status"], chunk["error"]


async def test_a_conversation_whose_transcription_event_was_deleted_is_found_and_finalized(
    settings: Settings, redis: RedisClient, s3: S3Client, store: ConversationStore,
    run_workers: RunWorkers,
) -> None:
    cid, uploads = await conversation_with_chunks(store, s3, settings, 2)
    publisher = publisher_for(redis, settings)
    kept = await events.publish(publisher, events.CHUNK_UPLOADED, uploads[0])
    lost = await events.publish(publisher, events.CHUNK_UPLOADED, uploads[1])
    await redis.xdel("echo:{transcription}", lost)
    assert (await store.finish(cid)).changed
    registry = CollectorRegistry()
    async with run_workers(NoopTranscriber("hello")):
        await wait_until(lambda: chunk_status(store, cid, uploads[0].chunk_id),
                         until=lambda s: s[0] == "transcribed", timeout_s=60, interval_s=0.1)
        await until_drained(redis)
        assert kept and not await is_finalized(store, cid)
        async with sweeping(make_sweeper(settings, redis, s3, registry)):
            await until_finalized(store, cid, message="the sweeper did not get it finalized")
    assert await chunk_status(store, cid, uploads[1].chunk_id) == ("transcribed", None)
    assert sample(registry, "echo_stuck_chunks_found_total") >= 1
    assert sample(registry, "echo_recovered_total", action="republished_chunk_uploaded") >= 1
    assert sample(registry, "echo_sweeper_last_success_timestamp_seconds") > 0


async def test_a_chunk_whose_object_was_deleted_is_marked_failed_and_the_conversation_finalizes(
    settings: Settings, redis: RedisClient, s3: S3Client, store: ConversationStore,
    run_workers: RunWorkers,
) -> None:
    cid, uploads = await conversation_with_chunks(store, s3, settings, 1)
    await s3.delete_object(Bucket=settings.s3_bucket, Key=uploads[0].key)
    assert (await store.finish(cid)).changed
    registry = CollectorRegistry()
    async with run_workers(NoopTranscriber()), sweeping(make_sweeper(settings, redis, s3, registry)):
        await until_finalized(store, cid, message="the sweeper did not get it finalized")
    assert await chunk_status(store, cid, uploads[0].chunk_id) == ("failed", "upload not found")
    assert sample(registry, "echo_recovered_total", action="chunk_failed_upload_not_found") == 1
    assert sample(registry, "echo_stuck_conversations_found_total") >= 1


async def test_manual_recovery_is_idempotent(
    settings: Settings, redis: RedisClient, s3: S3Client, store: ConversationStore,
    run_workers: RunWorkers,
) -> None:
    cid, uploads = await conversation_with_chunks(store, s3, settings, 2)
    await s3.delete_object(Bucket=settings.s3_bucket, Key=uploads[1].key)
    await store.finish(cid)
    sweeper = make_sweeper(settings, redis, s3)
    first = await sweeper.recover_conversation(cid)
    second = await sweeper.recover_conversation(cid)
    assert "chunk_failed_upload_not_found" in first["actions"]
    assert "republished_chunk_uploaded" in first["actions"]
    assert "chunk_failed_upload_not_found" not in second["actions"]
    async with run_workers(NoopTranscriber()):
        await until_finalized(store, cid, message="the recovered conversation was not finalized")
        await until_drained(redis)
    third = await sweeper.recover_conversation(cid)
    assert third["actions"] == [] and third["was_finalized"]
    state = await store.processing_state(cid)
    assert state.finalizations == 1
    assert [c["status"] for c in await store.list_chunks(cid)] == ["transcribed", "failed"]


async def test_a_dry_run_reports_stuck_work_and_changes_nothing(
    settings: Settings, redis: RedisClient, s3: S3Client, store: ConversationStore,
) -> None:
    cid, uploads = await conversation_with_chunks(store, s3, settings, 1)
    await store.finish(cid)
    sweeper = make_sweeper(settings.replace(stuck_after_s=0.001, transcription_retry_window_s=0.001,
                                            stream_lease_s=0.001), redis, s3)
    report = await wait_until(sweeper.dry_run, until=lambda r: len(r.items) == 2, timeout_s=10)
    assert report.examined == 1 and report.complete
    assert {(i.kind, i.status, tuple(i.actions)) for i in report.items} == {
        ("conversation", "finished", ()), ("chunk", "uploaded", ())}
    assert await chunk_status(store, cid, uploads[0].chunk_id) == ("uploaded", None)
    assert await redis.exists("echo:{transcription}") == 0


async def test_a_run_examines_at_most_its_bound_and_the_next_run_goes_on_from_there(
    settings: Settings, redis: RedisClient, s3: S3Client, store: ConversationStore,
) -> None:
    for project_size in (3, 2):
        project = await store.create_project({"name": "p"})
        for _ in range(project_size):
            await store.create_conversation(project["id"], {"title": "t"})
    sweeper = make_sweeper(settings.replace(stuck_sweep_max_items=3), redis, s3)
    runs = [await sweeper.run_now() for _ in range(3)]
    assert [(r.examined, r.complete) for r in runs if r] == [(3, False), (2, True), (3, False)]
    log = await SweepLease(redis).runs()
    assert [r["examined"] for r in log] == [3, 2, 3]
    exact = await sweeper.dry_run(limit=5)
    assert (exact.examined, exact.complete) == (5, True)


async def test_a_sweep_whose_lease_was_taken_over_cannot_write_its_state(
    redis: RedisClient,
) -> None:
    lease = SweepLease(redis)
    first = await lease.acquire("a", lease_s=0.2, interval_s=0)
    assert first.outcome == "acquired"
    assert (await lease.acquire("b", lease_s=10, interval_s=0)).outcome == "held"
    await wait_until(lambda: redis.exists(lease.lease_key), until=lambda n: n == 0, timeout_s=10)
    second = await lease.acquire("b", lease_s=10, interval_s=0)
    assert second.outcome == "acquired" and int(second.token) > int(first.token)
    assert not await lease.write(first.token, lease_s=10, fields={"cursor_project": 7})
    assert await lease.finish(first.token, {"owner": "a"}, {}) is None
    assert await lease.write(second.token, lease_s=10, fields={"cursor_project": 1})
    assert await lease.finish(second.token, {"owner": "b"}, {}) is not None
    assert (await lease.state())["cursor_project"] == "1"
    assert [r["owner"] for r in await lease.runs()] == ["b"]
    assert (await lease.acquire("c", lease_s=10, interval_s=3600)).outcome == "not_due"


async def test_a_finished_conversation_held_back_by_a_wrong_open_chunks_counter_is_repaired(
    settings: Settings, redis: RedisClient, s3: S3Client, store: ConversationStore,
    run_workers: RunWorkers,
) -> None:
    cid, uploads = await conversation_with_chunks(store, s3, settings, 1)
    await store.mark_transcribed(cid, uploads[0].chunk_id, transcript="done")
    # A counter left one too high (the old platform's day-long block): nothing would move it.
    await redis.hincrby(store.conversation_key(cid), "open_chunks", 1)
    assert not (await store.finish(cid)).finalizable
    registry = CollectorRegistry()
    async with run_workers(NoopTranscriber()), sweeping(make_sweeper(settings, redis, s3, registry)):
        await until_finalized(store, cid, message="the sweeper did not repair the counter")
    assert (await store.get_conversation(cid) or {})["open_chunks"] == 0
    assert sample(registry, "echo_recovered_total", action="repaired_open_chunks") == 1
    assert sample(registry, "echo_recovered_total", action="republished_finalize") >= 1


async def test_a_chunk_left_pending_verification_without_its_event_is_verified_and_transcribed(
    settings: Settings, redis: RedisClient, s3: S3Client, store: ConversationStore,
    run_workers: RunWorkers,
) -> None:
    """The object is there but its ``upload.verify`` never reached the stream."""
    settings = settings.replace(stream_max_deliveries=1)  # pending bound: 0.6 + 2 x 1 s
    cid, uploads = await conversation_with_chunks(store, s3, settings, 1, confirm_now=False)
    await s3.put_object(Bucket=settings.s3_bucket, Key=uploads[0].key, Body=b"audio",
                        ContentType="audio/webm")  # the verifier checks the type
    await store.confirm_chunk(cid, uploads[0].chunk_id, path=uploads[0].key, source="PORTAL_AUDIO",
                              timestamp="2026-01-01T10:00:00Z", verified=False)
    await store.finish(cid)
    verifier = ConsumerRuntime(redis, streams_config(settings), CollectorRegistry(), [
        upload_confirmation_group(store=store, s3=s3, publisher=publisher_for(redis, settings),
                                  settings=settings)], consumer_name="verifier")
    await verifier.start()
    registry = CollectorRegistry()
    try:
        async with run_workers(NoopTranscriber("hi")), \
                sweeping(make_sweeper(settings, redis, s3, registry)):
            await until_finalized(store, cid, message="the pending chunk was not re-driven")
    finally:
        await verifier.stop(grace_s=2)
    assert await chunk_status(store, cid, uploads[0].chunk_id) == ("transcribed", None)
    assert sample(registry, "echo_recovered_total", action="republished_upload_verify") >= 1


async def test_a_conversation_the_sweeper_cannot_read_does_not_stop_the_run(
    settings: Settings, redis: RedisClient, s3: S3Client, store: ConversationStore,
) -> None:
    broken, broken_uploads = await conversation_with_chunks(store, s3, settings, 1)
    await redis.hset(store.chunk_key(broken, broken_uploads[0].chunk_id), "updated_ms", "garbage")
    cid, uploads = await conversation_with_chunks(store, s3, settings, 1)
    await s3.delete_object(Bucket=settings.s3_bucket, Key=uploads[0].key)
    for conversation_id in (broken, cid):
        await store.finish(conversation_id)
    sweeper = make_sweeper(settings.replace(stuck_after_s=0.001), redis, s3)
    report = await wait_until(sweeper.run_now, until=lambda r: r is not None and any(
        i.chunk_id == uploads[0].chunk_id for i in r.items), timeout_s=30, interval_s=0.2)
    assert report is not None and report.examined == 2 and report.errors == 1
    assert await chunk_status(store, cid, uploads[0].chunk_id) == ("failed", "upload not found")
