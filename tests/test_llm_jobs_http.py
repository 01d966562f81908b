"""Auto-select and summaries end to end: host API -> llm stream -> handlers -> job / conversation.

Runs with the offline provider (no ANTHROPIC_API_KEY), as the embedded default does.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from api_support import ApiClient
from pytest_aiohttp import AiohttpClient
from waiting import wait_until

from config import Settings
from events import catalogue as events
from gateway.app import create_app
from gateway.appkeys import REDIS
from gateway.consumers import consumers_ctx
from gateway.groups import llm_spec
from gateway.wiring import publisher_for
from storage.conversations import ConversationStore
from storage.redis_client import RedisClient
from storage.s3_client import S3Client

TOKEN = "host-secret"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def host_settings(env: dict[str, str]) -> Settings:
    return Settings.from_env({**env, "ADMIN_TOKEN": TOKEN, "LLM_BATCH_SIZE": "20"})


@pytest.fixture
async def client(
    aiohttp_client: AiohttpClient, host_settings: Settings, redis: RedisClient, s3: S3Client
) -> ApiClient:
    # create_app runs the LLM service and its routes; add the llm consumer group.
    app = create_app(host_settings, background=[consumers_ctx([llm_spec])])
    return await aiohttp_client(app)


async def make_project(redis: RedisClient, n: int) -> tuple[str, list[str]]:
    store = ConversationStore(redis)
    project = await store.create_project({"name": "p"})
    ids = []
    for i in range(n):
        conversation = await store.create_conversation(project["id"], {"title": f"c{i}"})
        cid = conversation["id"]
        key = store.conversation_key(cid)
        if i % 3 == 0:
            await redis.hset(key, "summary", "people argued about cycling lanes")
        elif i % 3 == 1:
            await redis.hset(key, "merged_transcript", "we spoke about the bus timetable")
        ids.append(cid)  # i % 3 == 2: no summary, no transcript -> skipped
    return project["id"], ids


async def poll_job(client: ApiClient, job_id: str, timeout_s: float = 60) -> dict[str, Any]:
    async def job() -> dict[str, Any]:
        response = await client.get(f"/api/jobs/{job_id}", headers=AUTH)
        assert response.status == 200
        return dict(await response.json())

    completed: dict[str, Any] = await wait_until(
        job, until=lambda j: j["status"] == "completed", timeout_s=timeout_s,
        message=f"job {job_id} did not complete",
    )
    return completed


@pytest.mark.slow
async def test_auto_select_job_runs_on_the_stream_and_merges_in_order(
    client: ApiClient, redis: RedisClient
) -> None:
    project_id, _ = await make_project(redis, 60)
    response = await client.post(
        f"/api/projects/{project_id}/auto-select", json={"query": "Cycling lanes?"}, headers=AUTH
    )
    assert response.status == 202
    job_id = (await response.json())["job_id"]
    job = await poll_job(client, job_id)
    # 40 conversations have text (20 skipped): 2 batches of 20.
    assert (job["batches_total"], job["batches_done"]) == (2, 2)
    assert job["errors"] == []
    ordered = await ConversationStore(redis).list_conversations(project_id)
    expected = [c["id"] for c in ordered if c["summary"]]
    assert job["selected_conversation_ids"] == expected
    assert job["provider"] == "offline" and "offline" in job["note"]


async def test_the_host_api_checks_token_project_and_body(
    client: ApiClient, redis: RedisClient
) -> None:
    project_id, _ = await make_project(redis, 1)
    url = f"/api/projects/{project_id}/auto-select"
    assert (await client.post(url, json={"query": "x"})).status == 401
    empty = await client.post(url, json={"query": " "}, headers=AUTH)
    assert empty.status == 400 and (await empty.json())["code"] == "bad_request"
    malformed = await client.post("/api/projects/nope/auto-select", json={"query": "x"}, headers=AUTH)
    assert malformed.status == 400
    unknown = await client.post(
        f"/api/projects/{uuid.uuid4()}/auto-select", json={"query": "x"}, headers=AUTH
    )
    assert unknown.status == 404
    bad_language = await client.post(url, json={"query": "x", "language": "{x}"}, headers=AUTH)
    assert bad_language.status == 400
    assert (await client.get("/api/jobs/nope", headers=AUTH)).status == 404
    assert (await client.get("/api/jobs/nope")).status == 401


@pytest.mark.slow
async def test_a_summary_request_stores_the_summary_on_the_conversation_and_in_s3(
    client: ApiClient, redis: RedisClient, s3: S3Client, host_settings: Settings
) -> None:
    store = ConversationStore(redis)
    project = await store.create_project({"name": "p"})
    cid = (await store.create_conversation(project["id"], {"title": "t"}))["id"]
    transcript = " ".join(f"Sentence number {i} about housing." for i in range(12))
    await redis.hset(store.conversation_key(cid), mapping={"merged_transcript": transcript, "final_gen": 3})
    publisher = publisher_for(client.app[REDIS], host_settings)
    await publisher.publish(
        events.LLM, events.CONVERSATION_SUMMARIZE.name, {"conversation_id": cid, "generation": 3},
        idempotency_key=f"summary:{cid}:3",
    )
    await wait_until(lambda: redis.hget(store.conversation_key(cid), "summary_gen"),
                     until=lambda generation: generation == "3", timeout_s=60,
                     message="the summary was not stored")
    conversation = await store.get_conversation(cid)
    assert conversation is not None and conversation["summary"]
    assert await redis.hget(store.conversation_key(cid), "summary_provider") == "offline"
    obj = await s3.get_object(Bucket=host_settings.s3_bucket, Key=f"conversation/{cid}/summary.json")
    async with obj["Body"] as body:
        stored = json.loads(await body.read())
    assert stored["summary"] == conversation["summary"]
    assert stored["provider"] == "offline"
