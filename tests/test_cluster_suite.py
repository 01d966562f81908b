"""The whole system on a real 3-master Redis Cluster (tests/cluster_support.py).

Every test here is marked ``redis_cluster``: ``settings``, ``redis``, ``client`` and the
other Redis fixtures talk to the session's cluster. The streams core's own specifications
run on Cluster in tests/test_cluster_streams.py. To prove a new feature on Cluster, add its
test here (or mark its module ``pytestmark = pytest.mark.redis_cluster``).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from api_support import (
    HOST_HEADERS,
    ApiClient,
    P,
    confirm,
    get_upload_url,
    open_conversation,
    post_to_s3,
)
from emulators.openai_audio import OpenAIAudioEmulator
from prometheus_client import CollectorRegistry
from pytest_aiohttp import AiohttpClient
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError
from waiting import wait_until

from config import Settings
from gateway.app import create_app
from gateway.consumers import worker_background
from gateway.lifecycle import llm_ctx
from llm.lifecycle import make_limiter
from llm.metrics import LlmMetrics
from storage.conversations import ConversationStore
from storage.redis_client import RedisClient, RedisTimeouts, open_redis
from storage.s3_client import S3Client
from transcription.bound import CallBound
from transcription.finalization import transcript_keys
from transcription.metrics import TranscriptionMetrics

pytestmark = pytest.mark.redis_cluster


def node_of(redis: RedisClient, key: str) -> str:
    assert isinstance(redis, RedisCluster)
    node = redis.get_node_from_key(key)
    assert node is not None
    return str(node.name)


async def test_the_fixtures_talk_to_three_masters_and_the_key_families_spread_over_them(
    redis: RedisClient, settings: Settings
) -> None:
    assert settings.redis_cluster and isinstance(redis, RedisCluster)
    assert len(redis.get_primaries()) == 3
    store = ConversationStore(redis)
    conversations = {node_of(redis, store.conversation_key(str(uuid.uuid4()))) for _ in range(30)}
    streams = {node_of(redis, f"echo:{{{s}}}") for s in ("uploads", "transcription", "llm")}
    assert len(conversations) == 3 and len(streams) >= 2


# --- the participant flow, end to end


@pytest.fixture
async def speech_api() -> AsyncIterator[OpenAIAudioEmulator]:
    server = OpenAIAudioEmulator(api_key="sk-test", responder=lambda data: "plant more trees")
    await server.start()
    yield server
    await server.close()


async def test_a_participant_upload_becomes_a_finalized_transcript_and_summary(
    api_env: dict[str, str], redis: RedisClient, s3: S3Client, aiohttp_client: AiohttpClient,
    speech_api: OpenAIAudioEmulator,
) -> None:
    """The gateway and every consumer group in one app (as ``dev`` runs them)."""
    settings = Settings.from_env({
        **api_env, "TRANSCRIBER": "openai", "TRANSCRIBER_URL": speech_api.base_url,
        "TRANSCRIBER_API_KEY": speech_api.api_key, "STREAM_LEASE_S": "2",
        "SHUTDOWN_GRACE_S": "1",
    })
    app = create_app(settings, background=worker_background([], already=(llm_ctx,)))
    client = await aiohttp_client(app)
    assert (await client.get("/readyz")).status == 200

    _project, conversation = await open_conversation(client)
    cid = conversation["id"]
    grant = await get_upload_url(client, cid)
    assert (await post_to_s3(grant, b"opus audio bytes")).status == 204
    resp = await confirm(client, cid, grant)
    assert resp.status == 200 and (await resp.json())["status"] == "confirmed"
    assert (await client.post(f"{P}/conversations/{cid}/finish")).status == 200

    async def finalized() -> dict[str, Any]:
        resp = await client.get(f"{P}/projects/{_project['id']}/conversations/{cid}")
        return dict(await resp.json())

    final = await wait_until(finalized, until=lambda c: c["is_all_chunks_transcribed"]
                             and c["summary"], timeout_s=60, interval_s=0.1,
                             message="the conversation was not finalized and summarized")
    assert final["is_finished"] is True
    chunks = await (await client.get(f"{P}/projects/{_project['id']}/conversations/{cid}/chunks"))\
        .json()
    assert [(c["status"], c["transcript"]) for c in chunks] == [("transcribed", "plant more trees")]
    body = await s3.get_object(Bucket=settings.s3_bucket, Key=transcript_keys(cid)[0])
    async with body["Body"] as stream:
        doc = json.loads(await stream.read())
    assert doc["chunks"][0]["transcript"] == "plant more trees"


# --- get-upload-url on Cluster: the project is checked first (another slot)


async def test_get_upload_url_grants_40_per_conversation_then_429_and_checks_the_project(
    client: ApiClient, redis: RedisClient
) -> None:
    _project, conversation = await open_conversation(client)
    cid = conversation["id"]
    body = {"filename": "a.webm", "content_type": "audio/webm"}
    responses = await asyncio.gather(*(
        client.post(f"{P}/conversations/{cid}/get-upload-url", json=body) for _ in range(45)
    ))
    statuses = sorted(r.status for r in responses)
    assert statuses == [200] * 40 + [429] * 5
    refused = next(r for r in responses if r.status == 429)
    assert int(refused.headers["Retry-After"]) >= 1
    assert await redis.zcard(ConversationStore(redis).conversation_limit_key(cid, "upload-url")) \
        == 40

    _other, second = await open_conversation(client)
    resp = await client.patch(f"/api/host/projects/{_other['id']}",
                              json={"is_conversation_allowed": False}, headers=HOST_HEADERS)
    assert resp.status == 200, await resp.text()
    closed = await client.post(f"{P}/conversations/{second['id']}/get-upload-url", json=body)
    assert closed.status == 403
    unknown = await client.post(f"{P}/conversations/{uuid.uuid4()}/get-upload-url", json=body)
    assert unknown.status == 404


# --- the cluster-wide bounds of LLM and transcription calls


async def test_llm_and_transcription_calls_stay_within_their_cluster_wide_bounds(
    redis: RedisClient, settings: Settings
) -> None:
    """Three limiters each (as three processes would), 2 permits per bound."""
    two = settings.replace(llm_max_concurrent_calls=2)
    llm = [make_limiter(two, redis, LlmMetrics(CollectorRegistry()), "m") for _ in range(3)]
    transcription = [
        CallBound.create(redis, TranscriptionMetrics(CollectorRegistry()), prefix="echo",
                         per_process=8, cluster=2, lease_s=30, model="m")
        for _ in range(3)
    ]
    holding = {"llm": 0, "transcription": 0}
    peak = {"llm": 0, "transcription": 0}

    async def work(bound: str) -> None:
        holding[bound] += 1
        peak[bound] = max(peak[bound], holding[bound])
        await asyncio.sleep(0.02)  # the call: holders overlap, others queue
        holding[bound] -= 1

    async def llm_call(n: int) -> None:
        async with llm[n % 3].permit():
            await work("llm")

    async def transcription_call(n: int) -> None:
        async with transcription[n % 3].slot():
            await work("transcription")

    for limiter in llm:
        await limiter.start()  # the liveness heartbeat script runs on Cluster too
    try:
        await asyncio.gather(*(llm_call(n) for n in range(18)),
                             *(transcription_call(n) for n in range(18)))
        await llm[0].pause_for(0.2)
        assert (await llm[0].state())["pause_left_s"] > 0
    finally:
        for limiter in llm:
            await limiter.close()
    assert peak == {"llm": 2, "transcription": 2}
    assert (await transcription[0].state())["permits_in_use"] == 0


# --- a busy pool


async def test_a_busy_cluster_pool_makes_callers_wait_instead_of_failing(
    settings: Settings,
) -> None:
    two = settings.replace(redis_max_connections=2)
    async with open_redis(two) as client:
        # Each BLPOP holds its connection for 50 ms; many more callers than connections
        # (on every node, with pipelines among them) all succeed.
        calls = [client.blpop([f"nothing-{n}"], timeout=0.05) for n in range(12)]

        async def pipelined(n: int) -> list[Any]:
            async with client.pipeline(transaction=False) as pipe:
                for m in range(6):
                    pipe.incr(f"counter-{n}-{m}")
                return list(await pipe.execute())

        results = await asyncio.gather(*calls, *(pipelined(n) for n in range(6)))
        assert results == [None] * 12 + [[1] * 6] * 6


async def blocked_clients(redis: RedisClient) -> int:
    """Clients blocked in a command (BLPOP...), summed over the masters."""
    assert isinstance(redis, RedisCluster)
    per_node = await redis.info("clients", target_nodes=RedisCluster.PRIMARIES)
    return sum(int(info["blocked_clients"]) for info in per_node.values())


async def test_a_caller_that_waits_past_the_pool_timeout_gets_a_connection_error(
    settings: Settings, redis: RedisClient
) -> None:
    """Not ``MaxConnectionsError``: the error the API answers 503 for."""
    two = settings.replace(redis_max_connections=2)
    async with open_redis(two, RedisTimeouts(pool_wait_s=0.1)) as client:
        async def hold(n: int) -> Any:
            return await client.blpop([f"held-{n}"], timeout=2)

        holders = [asyncio.create_task(hold(n)) for n in range(2)]
        await wait_until(lambda: blocked_clients(redis), until=lambda n: n == 2,
                         message="the two holders never blocked")
        with pytest.raises(RedisConnectionError, match="No connection available"):
            await client.blpop(["third"], timeout=1)
        assert await asyncio.gather(*holders) == [None, None]
