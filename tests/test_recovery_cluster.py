"""The stuck-work sweeper on a real 3-master Redis Cluster: its lease scripts, the walk over
conversations in many slots, the counter repair and the re-drives."""

from __future__ import annotations

import pytest
from api_support import stream_events
from recovery_support import RECOVERY_OVERRIDES, make_sweeper
from redis.asyncio.cluster import RedisCluster
from transcription_support import conversation_with_chunks
from waiting import wait_until

from config import Settings
from storage.conversations import ConversationStore
from storage.redis_client import open_redis
from storage.s3_client import S3Client


@pytest.fixture(scope="module")
def bucket_name() -> str:
    return "test-recovery-cluster"


@pytest.mark.redis_cluster
@pytest.mark.test_timeout(120)
async def test_the_sweeper_re_drives_stuck_work_on_a_cluster(
    base_env: dict[str, str], s3_env: dict[str, str], s3: S3Client,
) -> None:
    settings = Settings.from_env({**base_env, **s3_env, **RECOVERY_OVERRIDES})
    async with open_redis(settings) as redis:
        assert isinstance(redis, RedisCluster)
        await redis.flushall()  # the session's cluster: only this test's conversations
        store = ConversationStore(redis)
        gone, gone_uploads = await conversation_with_chunks(store, s3, settings, 1)
        await s3.delete_object(Bucket=settings.s3_bucket, Key=gone_uploads[0].key)
        lost, _ = await conversation_with_chunks(store, s3, settings, 1)
        for cid in (gone, lost):
            await store.finish(cid)
        sweeper = make_sweeper(settings, redis, s3)
        dry = await wait_until(sweeper.dry_run, until=lambda r: len(r.items) == 4,
                               timeout_s=30, interval_s=0.2)
        assert dry.examined == 2 and dry.complete
        report = await sweeper.run_now()
        assert report is not None and report.examined == 2
        actions = {(i.conversation_id, a) for i in report.items for a in i.actions}
        assert (gone, "chunk_failed_upload_not_found") in actions
        assert (gone, "republished_finalize") in actions
        assert (lost, "republished_chunk_uploaded") in actions
        transcription = await stream_events(redis, "transcription")
        assert {(e["type"], e["payload"]["conversation_id"]) for e in transcription} == {
            ("conversation.finalize", gone), ("chunk.uploaded", lost)}
        again = await sweeper.recover_conversation(gone)
        assert "chunk_failed_upload_not_found" not in again["actions"]
        chunk = await store.get_chunk(gone, gone_uploads[0].chunk_id)
        assert chunk is not None and chunk["error"] == "upload not found"
