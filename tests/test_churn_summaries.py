"""A summary is paid for once (issue #14): the model's result is kept before the S3 write.

The store keeps a generation's summary as a draft as soon as the model answers;
a redelivery after a failed S3 write finds it, writes S3 and the final record,
and does not call the model again. The model is the Anthropic emulator (every
request counted); Redis and S3 are the session's real servers.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from botocore.exceptions import ClientError
from emulators.anthropic import AnthropicEmulator
from prometheus_client import CollectorRegistry
from waiting import wait_until

from config import Settings
from events import catalogue as events
from gateway.wiring import publisher_for, streams_config
from llm.handlers import LlmHandlers, llm_group
from llm.lifecycle import open_llm
from storage.conversations import ConversationStore, SummaryDraft
from storage.redis_client import RedisClient
from storage.s3_client import S3Client
from streams.runtime import ConsumerRuntime

SUMMARY = "They weighed more cycling lanes against parking on the high street."
DRAFT_FIELDS = ("summary_draft_gen", "summary_draft", "summary_draft_provider",
                "summary_draft_model", "summary_draft_created_at")


@pytest.fixture
def store(redis: RedisClient) -> ConversationStore:
    return ConversationStore(redis)


async def finalized_conversation(store: ConversationStore) -> tuple[str, int]:
    """A conversation finalized through the store; its id and generation."""
    project = await store.create_project({"name": "p"})
    cid = (await store.create_conversation(project["id"], {"title": "t"}))["id"]
    await store.add_text_chunk(cid, content="Cycling lanes or parking?",
                               timestamp="2026-01-01T10:00:00Z", source="PORTAL_TEXT")
    await store.finish(cid)
    claim = await store.begin_finalization(cid, "1-0", 30)
    assert await store.commit_finalization(
        cid, "1-0", claim.generation, merged_transcript="Cycling lanes or parking?",
        transcript_json_key="j", transcript_text_key="t", failed_chunks=0,
    ) == "ok"
    return cid, claim.generation


def draft(generation: int, text: str = "first") -> SummaryDraft:
    return SummaryDraft(generation=generation, text=text, provider="anthropic", model="m",
                        created_at=1767225600.125)


# --- the store


async def test_the_first_draft_of_a_generation_is_kept_and_the_final_record_drops_it(
    store: ConversationStore, redis: RedisClient,
) -> None:
    cid, gen = await finalized_conversation(store)
    assert (await store.summary_inputs(cid)).draft_for(gen) is None
    assert await store.keep_summary_draft(cid, draft(gen)) == ("ok", draft(gen))
    # A second writer of the same generation gets the kept one (both write the same summary).
    assert await store.keep_summary_draft(cid, draft(gen, "second")) == ("ok", draft(gen))
    inputs = await store.summary_inputs(cid)
    assert inputs.skip_reason(gen) is None and inputs.draft_for(gen) == draft(gen)
    assert inputs.draft_for(gen + 1) is None
    assert await store.keep_summary_draft(cid, draft(gen - 1)) == ("stale", None)

    assert await store.store_summary(cid, gen, text="first", provider="anthropic", model="m",
                                     s3_key="k") == "ok"
    assert await redis.hmget(store.conversation_key(cid), list(DRAFT_FIELDS)) == [None] * 5
    assert await store.keep_summary_draft(cid, draft(gen)) == ("already", None)
    assert await store.keep_summary_draft(str(uuid.uuid4()), draft(1)) == (
        "no_conversation", None)


async def test_a_draft_of_a_generation_that_moved_on_is_not_used(
    store: ConversationStore,
) -> None:
    cid, gen = await finalized_conversation(store)
    await store.keep_summary_draft(cid, draft(gen))
    await store.add_text_chunk(cid, content="And the buses.", timestamp="2026-01-01T10:00:30Z",
                               source="PORTAL_TEXT")  # re-opens: a new generation
    inputs = await store.summary_inputs(cid)
    assert inputs.skip_reason(gen) == "stale"
    assert await store.store_summary(cid, gen, text="first", provider="anthropic", model="m",
                                     s3_key="k") == "stale"


# --- the handler on the llm group


class PutFailsOnce:
    """The real S3 client whose first write of a ``summary.json`` fails (S3 answering 503)."""

    def __init__(self, s3: S3Client) -> None:
        self._s3 = s3
        self.summary_puts = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._s3, name)

    async def put_object(self, **kwargs: Any) -> Any:
        if str(kwargs["Key"]).endswith("/summary.json"):
            self.summary_puts += 1
            if self.summary_puts == 1:
                raise ClientError({"Error": {"Code": "ServiceUnavailable",
                                             "Message": "Service Unavailable"}}, "PutObject")
        return await self._s3.put_object(**kwargs)


@pytest.fixture
async def emulator() -> AsyncIterator[AnthropicEmulator]:
    async with AnthropicEmulator(responder=lambda body: SUMMARY) as emu:
        yield emu


async def test_a_failed_s3_write_of_a_summary_does_not_call_the_model_again(
    store: ConversationStore, redis: RedisClient, s3: S3Client, env: dict[str, str],
    emulator: AnthropicEmulator,
) -> None:
    settings = Settings.from_env({**env, "ANTHROPIC_API_KEY": emulator.api_key,
                                  "ANTHROPIC_BASE_URL": emulator.base_url})
    cid, gen = await finalized_conversation(store)
    flaky = PutFailsOnce(s3)
    async with open_llm(settings, redis, CollectorRegistry()) as service:
        handlers = LlmHandlers(service, redis=redis, s3=flaky, settings=settings)
        runtime = ConsumerRuntime(redis, streams_config(settings), CollectorRegistry(),
                                  [llm_group(handlers, settings)], consumer_name="summaries")
        await runtime.start()
        try:
            await events.publish(publisher_for(redis, settings), events.CONVERSATION_SUMMARIZE,
                                 events.SummarizeRequest(cid, gen))
            await wait_until(lambda: redis.hget(store.conversation_key(cid), "summary_gen"),
                             until=lambda stored: stored == str(gen), timeout_s=60,
                             interval_s=0.1, message="the summary was not stored")
        finally:
            await runtime.stop(1.0)

    assert len(emulator.requests) == 1
    assert flaky.summary_puts == 2
    conversation = await store.get_conversation(cid)
    assert conversation is not None and conversation["summary"] == SUMMARY
    raw = await redis.hgetall(store.conversation_key(cid))
    assert raw["summary_provider"] == "anthropic"
    assert raw["summary_key"] == f"conversation/{cid}/summary.json"
    assert not set(DRAFT_FIELDS) & set(raw)
    obj = await s3.get_object(Bucket=settings.s3_bucket, Key=raw["summary_key"])
    async with obj["Body"] as body:
        stored = json.loads(await body.read())
    assert (stored["summary"], stored["provider"]) == (SUMMARY, "anthropic")
    assert await redis.xlen("echo:{llm}:dead") == 0
