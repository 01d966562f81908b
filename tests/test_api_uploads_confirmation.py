"""confirm-upload before the object is visible: 202, then the upload-confirmation consumer decides."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from api_support import (  # noqa: F401  (fixtures)
    P, api_env, confirm, get_upload_url, make_client, open_conversation, post_to_s3, stream_events,
)
from config import Settings
from storage.conversations import ConversationStore
from storage.redis_client import RedisClient
from storage.s3_client import S3Client
from storage.upload_confirmation import upload_confirmation_group
from streams.consumer import ConsumerRuntime
from streams.publisher import Publisher


@pytest.fixture
async def run_consumer(redis: RedisClient, s3: S3Client) -> AsyncIterator[Any]:
    """``await run_consumer(settings)`` starts the real consumer runtime with the group."""
    runtimes: list[ConsumerRuntime] = []

    async def start(settings: Settings) -> ConsumerRuntime:
        spec = upload_confirmation_group(
            store=ConversationStore(redis, key_prefix=settings.redis_key_prefix), s3=s3,
            publisher=Publisher.from_settings(redis, settings), settings=settings,
        )
        runtime = ConsumerRuntime(redis, settings, CollectorRegistry(), [spec], consumer_name="t")
        await runtime.start()
        runtimes.append(runtime)
        return runtime

    yield start
    for runtime in runtimes:
        await runtime.stop(grace_s=2)


async def _chunk_status(client: Any, pid: str, cid: str) -> list[tuple[str, str | None]]:
    chunks = await (await client.get(f"{P}/projects/{pid}/conversations/{cid}/chunks")).json()
    return [(c["status"], c["error"]) for c in chunks]


async def _wait_for(predicate: Any, timeout_s: float = 60.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not await predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.1)


@pytest.mark.slow
async def test_confirm_before_the_object_exists_is_202_then_the_consumer_verifies_it(
    make_client: Any, api_env: dict[str, str], redis: RedisClient, run_consumer: Any
) -> None:
    client = await make_client(UPLOAD_CONFIRM_WAIT_S="0.2")
    project, conversation = await open_conversation(client)
    pid, cid = project["id"], conversation["id"]
    grant = await get_upload_url(client, cid)

    resp = await confirm(client, cid, grant)
    assert resp.status == 202
    assert await resp.json() == {"status": "pending_verification", "chunk_id": grant["chunk_id"]}
    # Listed at once, so the portal shows its finish button.
    assert await _chunk_status(client, pid, cid) == [("pending_verification", None)]
    # A repeat answers the current status and makes no second chunk.
    assert (await confirm(client, cid, grant)).status == 202
    assert len(await _chunk_status(client, pid, cid)) == 1

    await run_consumer(Settings.from_env({**api_env, "UPLOAD_VERIFY_DELAYS_S": "0.5,0.5,1,2,4,8,15"}))
    await asyncio.sleep(0.7)  # let it look (and defer) at least once
    assert (await post_to_s3(grant, b"z" * 500)).status == 204

    async def uploaded() -> bool:
        return await _chunk_status(client, pid, cid) == [("uploaded", None)]

    await _wait_for(uploaded)
    # Events may repeat (publishing is at-least-once); they carry one idempotency key.
    events = await stream_events(redis, "transcription")
    assert {(e["idem"], e["payload"]["chunk_id"]) for e in events} == {
        (f"transcribe:{grant['chunk_id']}", grant["chunk_id"])
    }
    assert (await confirm(client, cid, grant)).status == 200


@pytest.mark.slow
async def test_an_upload_that_never_appears_is_marked_failed_when_the_window_is_spent(
    make_client: Any, api_env: dict[str, str], redis: RedisClient, run_consumer: Any
) -> None:
    client = await make_client(UPLOAD_CONFIRM_WAIT_S="0.1")
    project, conversation = await open_conversation(client)
    pid, cid = project["id"], conversation["id"]
    grant = await get_upload_url(client, cid)
    assert (await confirm(client, cid, grant)).status == 202
    await client.post(f"{P}/conversations/{cid}/finish")

    await run_consumer(Settings.from_env({**api_env, "UPLOAD_VERIFY_DELAYS_S": "0.2,0.2,0.2"}))

    async def failed() -> bool:
        return await _chunk_status(client, pid, cid) == [("failed", "upload not found")]

    await _wait_for(failed)
    events = await stream_events(redis, "transcription")
    assert [e for e in events if e["type"] == "chunk.uploaded"] == []
    # The failed chunk was the last open one of a finished conversation: finalization is asked for.
    finalize = [e for e in events if e["type"] == "conversation.finalize"]
    assert [e["payload"] for e in finalize] == [{"conversation_id": cid}]


def test_the_default_verification_window_is_at_least_30_seconds() -> None:
    delays = Settings.from_env({}).upload_verify_delays_s
    assert delays == (1.0, 2.0, 4.0, 8.0, 15.0) and sum(delays) >= 30


async def test_the_registry_factory_builds_the_group_from_the_app(make_client: Any) -> None:
    from storage.upload_confirmation import UPLOAD_VERIFY_EVENT, upload_confirmation_spec
    from streams import names

    client = await make_client()
    spec = upload_confirmation_spec(client.server.app)
    assert (spec.stream, spec.group) == (names.UPLOADS, names.UPLOAD_CONFIRMATION_GROUP)
    assert set(spec.event_types) == {UPLOAD_VERIFY_EVENT}
