"""The conversation store on a real 3-master Redis Cluster: every Lua script runs there, and
the store's specifications (tests/test_conversation_store.py) hold there too.

The imported tests are collected again in this module, where the ``redis_cluster`` mark
moves their fixtures onto the cluster; ``store`` is the store on the pool (Cluster has no
auto-pipelined connection). Not imported: the project check inside the issuing script, which
on Cluster the route makes first (another slot; tests/test_cluster_suite.py).
"""

from __future__ import annotations

import uuid

import pytest
import test_conversation_store as store_specs
from redis.asyncio.cluster import RedisCluster

from storage.conversations import ConversationStore
from storage.ratelimit import SlidingWindowLimiter
from storage.redis_client import RedisClient
from storage.store_core import STORE_SCRIPTS

pytestmark = pytest.mark.redis_cluster

# Specifications of the single-server suite, collected again here (on Cluster).
test_a_chunk_listed_during_finalization_makes_the_commit_stale = store_specs.test_a_chunk_listed_during_finalization_makes_the_commit_stale
test_a_finalization_claim_is_held_by_one_event_and_commits_one_generation = store_specs.test_a_finalization_claim_is_held_by_one_event_and_commits_one_generation
test_a_finished_conversation_still_takes_a_late_chunk = store_specs.test_a_finished_conversation_still_takes_a_late_chunk
test_a_summary_is_stored_once_and_only_for_the_current_generation = store_specs.test_a_summary_is_stored_once_and_only_for_the_current_generation
test_all_keys_of_a_conversation_share_one_hash_tag = store_specs.test_all_keys_of_a_conversation_share_one_hash_tag
test_an_idle_conversation_stays_in_the_idle_set_until_its_finalize_event_is_stored = store_specs.test_an_idle_conversation_stays_in_the_idle_set_until_its_finalize_event_is_stored
test_an_issued_chunk_is_unlisted_and_expires_with_its_url = store_specs.test_an_issued_chunk_is_unlisted_and_expires_with_its_url
test_confirmation_is_idempotent_and_checks_the_key = store_specs.test_confirmation_is_idempotent_and_checks_the_key
test_deleting_a_chunk_of_a_finalized_conversation_reopens_it = store_specs.test_deleting_a_chunk_of_a_finalized_conversation_reopens_it
test_finalizable_flips_once_when_the_last_open_chunk_ends_after_finish = store_specs.test_finalizable_flips_once_when_the_last_open_chunk_ends_after_finish
test_idle_conversations_are_finished_once_even_by_concurrent_sweepers = store_specs.test_idle_conversations_are_finished_once_even_by_concurrent_sweepers
test_transitions_follow_the_chunk_state_machine = store_specs.test_transitions_follow_the_chunk_state_machine
T = "2026-01-01T10:00:00Z"


@pytest.fixture
def store(redis: RedisClient) -> ConversationStore:
    return ConversationStore(redis, key_prefix="echo")


async def test_every_store_script_runs_on_the_cluster(
    store: ConversationStore, redis: RedisClient
) -> None:
    """One conversation through every state change; afterwards every script of the store is
    loaded on every master (it was run there: redis-py loads a script where EVALSHA missed)."""
    assert isinstance(redis, RedisCluster)
    await redis.script_flush()
    project = await store.create_project({"name": "p"})
    pid = project["id"]
    assert (await store.update_project(pid, {"name": "q"}) or {})["name"] == "q"
    cid = (await store.create_conversation(pid, {"title": "t"}))["id"]
    first, second = str(uuid.uuid4()), str(uuid.uuid4())
    key = f"conversation/{cid}/chunks/{first}-a.webm"
    await store.issue_chunk(cid, first, path=key, filename="a.webm", content_type="audio/webm",
                            ttl_s=600)
    limiter = SlidingWindowLimiter(
        redis, name="upload-url", limit=5, window_s=60,
        key_fn=lambda c: store.conversation_limit_key(c, "upload-url"),
    )
    decision = await store.issue_chunk_limited(
        cid, second, path="k2", filename="b.webm", content_type="audio/webm", ttl_s=600,
        limiter=limiter, project_id=pid,
    )
    assert decision.allowed and decision.remaining == 4
    pending = await store.confirm_chunk(cid, first, path=key, timestamp=T, source="PORTAL_AUDIO",
                                        verified=False)
    assert (pending.status, pending.created) == ("pending_verification", True)
    assert (await store.mark_uploaded(cid, first, size=10)).changed
    await store.confirm_chunk(cid, second, path="k2", timestamp=T, source="PORTAL_AUDIO",
                              verified=True)
    assert await store.delete_chunk(cid, second)
    await store.add_text_chunk(cid, content="typed words", timestamp=T, source="PORTAL_TEXT")
    assert not (await store.finish(cid)).finalizable  # the audio chunk is still open
    assert (await store.mark_transcribed(cid, first, transcript="spoken")).finalizable
    claim = await store.begin_finalization(cid, "1-0", 30)
    assert claim.outcome == "claimed"
    assert await store.check_finalization(cid, "1-0", claim.generation, 30) == "ok"
    assert await store.commit_finalization(
        cid, "1-0", claim.generation, merged_transcript="spoken typed words",
        transcript_json_key="j", transcript_text_key="t", failed_chunks=0,
    ) == "ok"
    assert await store.mark_finalized(cid, merged_transcript="spoken typed words",
                                      summary=None) in ("ok", "already")
    inputs = await store.summary_inputs(cid)
    draft = inputs.draft_for(claim.generation)
    assert draft is None and inputs.skip_reason(claim.generation) is None
    from storage.summaries import SummaryDraft

    outcome, kept = await store.keep_summary_draft(
        cid, SummaryDraft(claim.generation, "a summary", "offline", "m", 1.5)
    )
    assert outcome == "ok" and kept is not None
    assert await store.store_summary(cid, claim.generation, text=kept.text, provider="offline",
                                     model="m", s3_key="s") == "ok"
    repair = await store.repair_open_chunks(cid)  # the sweeper's recount: nothing is open
    assert repair is not None and (repair.old, repair.new) == (0, 0)
    idle = (await store.create_conversation(pid, {"title": "idle"}))["id"]
    assert idle in [c for c, _ in await store.finish_idle(0.0)]

    # The store's own script registry names them; each must now be on every master.
    shas = [store._scripts[name].sha for name in STORE_SCRIPTS]
    loaded = await redis.script_exists(*shas)
    assert dict(zip(STORE_SCRIPTS, loaded, strict=True)) == dict.fromkeys(STORE_SCRIPTS, True)
