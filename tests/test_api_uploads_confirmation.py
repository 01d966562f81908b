"""confirm-upload before the object is visible: 202, then the upload-confirmation consumer decides."""



from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from api_support import (
    ApiClient,
    MakeClient,
    P,
    confirm,
    get_upload_url,
    open_conversation,
    post_to_s3,
    stream_events,
)
from prometheus_client import CollectorRegistry
from streams_support import read_stream
from waiting import wait_until

from config import Settings
from events import catalogue as events
from events.catalogue import ChunkUpload
from gateway.wiring import publisher_for, streams_config
from storage.conversations import ConversationStore
from storage.redis_client import RedisClient
from storage.s3_client import S3Client
from streams.names import StreamNames
from streams.publisher import Publisher
from streams.runtime import ConsumerRuntime
from uploads.confirmation import upload_confirmation_group


@pytest.fixture
async def run_consumer(redis: RedisClient, s3: S3Client) -> AsyncIterator[Any]:
    """``await run_consumer(settings)`` starts the real consumer runtime with the group
    (``s3=`` and ``publisher=`` replace the real ones)."""
    runtimes: list[ConsumerRuntime] = []

    async def start(
        settings: Settings, *, s3_client: Any = None, publisher: Publisher | None = None
    ) -> ConsumerRuntime:
        spec = upload_confirmation_group(
            store=ConversationStore(redis, key_prefix=settings.redis_key_prefix),
            s3=s3_client or s3, publisher=publisher or publisher_for(redis, settings),
            settings=settings,
        )
        runtime = ConsumerRuntime(
            redis, streams_config(settings), CollectorRegistry(), [spec], consumer_name="t"
        )
        await runtime.start()
        runtimes.append(runtime)
        return runtime

    yield start
    for runtime in runtimes:
        await runtime.stop(grace_s=2)


async def _chunk_status(client: ApiClient, pid: str, cid: str) -> list[tuple[str, str | None]]:
    chunks = await (await client.get(f"{P}/projects/{pid}/conversations/{cid}/chunks")).json()
    return [(c["status"], c["error"]) for c in chunks]


@pytest.mark.slow
async def test_confirm_before_the_object_exists_is_202_then_the_consumer_verifies_it(
    make_client: MakeClient, api_env: dict[str, str], redis: RedisClient, run_consumer: Any
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

    runtime = await run_consumer(
        Settings.from_env({**api_env, "UPLOAD_VERIFY_DELAYS_S": "0.5,0.5,1,2,4,8,15"})
    )
    deferred = runtime.metrics.deferred.labels(*runtime.groups[0].ctx.labels)
    await wait_until(lambda: deferred._value.get() >= 1,
                     message="the consumer never looked for the object (and deferred)")
    assert (await post_to_s3(grant, b"z" * 500)).status == 204

    async def uploaded() -> bool:
        return await _chunk_status(client, pid, cid) == [("uploaded", None)]

    await wait_until(uploaded, timeout_s=60, interval_s=0.1, message="never confirmed")
    # Events may repeat (publishing is at-least-once); they carry one idempotency key.
    events = await stream_events(redis, "transcription")
    assert {(e["idem"], e["payload"]["chunk_id"]) for e in events} == {
        (f"transcribe:{grant['chunk_id']}", grant["chunk_id"])
    }
    assert (await confirm(client, cid, grant)).status == 200


@pytest.mark.slow
async def test_an_upload_that_never_appears_is_marked_failed_when_the_window_is_spent(
    make_client: MakeClient, api_env: dict[str, str], redis: RedisClient, run_consumer: Any
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

    await wait_until(failed, timeout_s=60, interval_s=0.1, message="never marked failed")
    events = await stream_events(redis, "transcription")
    assert [e for e in events if e["type"] == "chunk.uploaded"] == []
    # The failed chunk was the last open one of a finished conversation: finalization is asked for.
    finalize = [e for e in events if e["type"] == "conversation.finalize"]
    assert [e["payload"] for e in finalize] == [{"conversation_id": cid}]


def test_the_default_verification_window_is_at_least_30_seconds() -> None:
    delays = Settings.from_env({}).upload_verify_delays_s
    assert delays == (1.0, 2.0, 4.0, 8.0, 15.0) and sum(delays) >= 30


async def test_the_registry_factory_builds_the_group_from_the_app(make_client: MakeClient) -> None:
    from gateway.groups import upload_confirmation_spec

    client = await make_client()
    spec = upload_confirmation_spec(client.app)
    assert (spec.stream, spec.group) == (events.UPLOADS, events.UPLOAD_CONFIRMATION_GROUP)
    assert set(spec.event_types) == {events.UPLOAD_VERIFY.name}


# --- lost finalize events, S3 errors, dead letters


class FlakyPublisher(Publisher):
    """Fails the first ``fail`` publications of ``event_type`` (a Redis hiccup on the XADD)."""

    def __init__(self, *args: Any, event_type: str, fail: int = 1, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.event_type, self.fail = event_type, fail

    async def publish(self, stream: str, event_type: str, payload: Any, **kwargs: Any) -> str:
        if event_type == self.event_type and self.fail > 0:
            self.fail -= 1
            raise ConnectionError("XADD failed")
        return await super().publish(stream, event_type, payload, **kwargs)


class FailingHeads:
    """The real S3 client whose first ``fail`` HEADs answer ``code`` (an outage, a 403)."""

    def __init__(self, s3: S3Client, *, fail: int, code: str = "503") -> None:
        self._s3, self.fail, self.code, self.heads = s3, fail, code, 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._s3, name)

    async def head_object(self, **kwargs: Any) -> Any:
        from botocore.exceptions import ClientError

        self.heads += 1
        if self.heads <= self.fail:
            raise ClientError({"Error": {"Code": self.code, "Message": "Service Unavailable"}},
                              "HeadObject")
        return await self._s3.head_object(**kwargs)


async def _pending_upload(
    redis: RedisClient, settings: Settings, *, finished: bool
) -> tuple[ConversationStore, ChunkUpload]:
    """A listed ``pending_verification`` chunk (its verify event published) of a conversation."""
    import uuid

    store = ConversationStore(redis, key_prefix=settings.redis_key_prefix)
    project = await store.create_project({"name": "p"})
    cid = (await store.create_conversation(project["id"], {"title": "t"}))["id"]
    chunk_id = str(uuid.uuid4())
    key = f"conversation/{cid}/chunks/{chunk_id}-c.webm"
    await store.issue_chunk(cid, chunk_id, path=key, filename="c.webm", content_type="audio/webm",
                            ttl_s=600)
    await store.confirm_chunk(cid, chunk_id, path=key, timestamp="2026-01-01T10:00:00Z",
                              source="PORTAL_AUDIO", verified=False)
    if finished:
        await store.finish(cid)
    upload = ChunkUpload(cid, chunk_id, key, "audio/webm")
    await events.publish(publisher_for(redis, settings), events.UPLOAD_VERIFY, upload)
    return store, upload


async def _wait_for_status(
    store: ConversationStore, upload: ChunkUpload, status: str, message: str
) -> None:
    """Until the stored chunk of ``upload`` has ``status`` (the background verifier runs)."""

    async def reached() -> bool:
        chunk = await store.get_chunk(upload.conversation_id, upload.chunk_id)
        return chunk is not None and chunk["status"] == status

    await wait_until(reached, timeout_s=15, interval_s=0.1, message=message)


async def _finalize_events(redis: RedisClient, cid: str) -> list[dict[str, Any]]:
    return [e for e in await stream_events(redis, "transcription")
            if e["type"] == "conversation.finalize" and e["payload"]["conversation_id"] == cid]


async def test_a_lost_finalize_publication_is_repeated_when_the_event_is_redelivered(
    api_env: dict[str, str], redis: RedisClient, run_consumer: Any
) -> None:
    """The chunk is already ``failed`` on the redelivery; finalize is still published."""
    settings = Settings.from_env({**api_env, "UPLOAD_VERIFY_DELAYS_S": "0.1"})
    store, upload = await _pending_upload(redis, settings, finished=True)
    publisher = FlakyPublisher(redis, StreamNames(settings.redis_key_prefix),
                               event_type="conversation.finalize")
    await run_consumer(settings, publisher=publisher)

    async def finalize_published() -> bool:
        return bool(await _finalize_events(redis, upload.conversation_id))

    await wait_until(finalize_published, timeout_s=15, interval_s=0.1,
                     message="finalize was never published")
    assert publisher.fail == 0  # the first publication did fail
    chunk = await store.get_chunk(upload.conversation_id, upload.chunk_id)
    assert chunk is not None and (chunk["status"], chunk["error"]) == ("failed", "upload not found")


async def test_an_s3_error_within_the_window_defers_and_the_upload_is_still_verified(
    api_env: dict[str, str], redis: RedisClient, s3: S3Client, run_consumer: Any
) -> None:
    """More failing HEADs than the runtime's deliveries: deferred, not dead-lettered."""
    settings = Settings.from_env({**api_env, "UPLOAD_VERIFY_DELAYS_S": ",".join(["0.1"] * 8)})
    store, upload = await _pending_upload(redis, settings, finished=False)
    await s3.put_object(Bucket=settings.s3_bucket, Key=upload.key, Body=b"audio",
                        ContentType="audio/webm")
    heads = FailingHeads(s3, fail=settings.stream_max_deliveries + 1)
    await run_consumer(settings, s3_client=heads)

    await _wait_for_status(store, upload, "uploaded", "never verified")
    assert heads.heads == heads.fail + 1
    assert await redis.xlen("echo:{uploads}:dead") == 0


async def test_an_upload_s3_refuses_to_show_fails_readably_when_the_window_is_spent(
    api_env: dict[str, str], redis: RedisClient, run_consumer: Any
) -> None:
    """AWS answers 403 (not 404) for a missing object without ListBucket: the chunk must not
    stay ``pending_verification`` (here a real 403: the verifier's credentials are wrong)."""
    from storage.s3_client import open_s3

    settings = Settings.from_env({**api_env, "UPLOAD_VERIFY_DELAYS_S": "0.1,0.1",
                                  "UPLOAD_VERIFY_ERROR_WINDOW_S": "1"})
    store, upload = await _pending_upload(redis, settings, finished=True)
    wrong = Settings.from_env({**api_env, "AWS_SECRET_ACCESS_KEY": "not-the-secret"})
    async with open_s3(wrong) as refusing_s3:
        await run_consumer(settings, s3_client=refusing_s3)

        await _wait_for_status(store, upload, "failed", "never marked failed")
    chunk = await store.get_chunk(upload.conversation_id, upload.chunk_id)
    assert chunk is not None and chunk["error"].startswith("upload could not be verified: ")
    assert "403" in chunk["error"] and "UPLOAD_VERIFY_ERROR_WINDOW_S=1)" in chunk["error"]
    assert len(await _finalize_events(redis, upload.conversation_id)) == 1
    assert await redis.xlen("echo:{uploads}:dead") == 0


def _verify_context(
    spec: Any, entries: Any, *, attempts: int, deliveries: int, reclaimed: bool
) -> Any:
    """The handler's view of the one verify event, as the runtime would build it."""
    from streams.envelope import decode
    from streams.spec import EventContext

    [(entry_id, fields)] = entries
    envelope = decode(fields)
    return EventContext(
        stream=spec.stream, group=spec.group, entry_id=entry_id, envelope=envelope,
        payload=ChunkUpload.from_payload(envelope.payload), deliveries=deliveries,
        names=StreamNames("echo"), attempts=attempts, reclaimed_after_crash=reclaimed,
    )


async def test_a_delivery_past_the_attempts_fails_the_chunk_instead_of_dead_lettering_it(
    api_env: dict[str, str], redis: RedisClient, s3: S3Client
) -> None:
    """The group's handler sees one started attempt more than it retries (here the worker died
    on each): it ends the chunk itself, so a dead-lettered verify event cannot strand it."""
    settings = Settings.from_env({**api_env, "UPLOAD_VERIFY_DELAYS_S": "0.1"})
    store, upload = await _pending_upload(redis, settings, finished=True)
    spec = upload_confirmation_group(
        store=store, s3=s3, publisher=publisher_for(redis, settings), settings=settings,
    )
    assert spec.max_deliveries is not None
    ctx = _verify_context(spec, await read_stream(redis, "echo:{uploads}"), reclaimed=True,
                          attempts=spec.max_deliveries, deliveries=spec.max_deliveries)
    await spec.handler(ctx)  # the object is not there and the window is not spent: no matter
    chunk = await store.get_chunk(upload.conversation_id, upload.chunk_id)
    assert chunk is not None and chunk["status"] == "failed"
    assert chunk["error"] == ("upload could not be verified: the check was attempted 5 times; "
                              "the worker stopped mid-way each time")
    assert len(await _finalize_events(redis, upload.conversation_id)) == 1


async def test_deliveries_to_workers_that_died_before_starting_cost_no_attempt(
    api_env: dict[str, str], redis: RedisClient, s3: S3Client
) -> None:
    """Many Redis deliveries, one started attempt: the check runs (and defers) as a first one."""
    from streams.spec import Defer

    settings = Settings.from_env({**api_env, "UPLOAD_VERIFY_DELAYS_S": "0.1"})
    store, upload = await _pending_upload(redis, settings, finished=True)
    spec = upload_confirmation_group(
        store=store, s3=s3, publisher=publisher_for(redis, settings), settings=settings,
    )
    ctx = _verify_context(spec, await read_stream(redis, "echo:{uploads}"), attempts=1,
                          deliveries=10, reclaimed=False)
    with pytest.raises(Defer):
        await spec.handler(ctx)
    chunk = await store.get_chunk(upload.conversation_id, upload.chunk_id)
    assert chunk is not None and chunk["status"] == "pending_verification"


async def test_s3_errors_longer_than_the_not_found_window_are_waited_out(
    api_env: dict[str, str], redis: RedisClient, s3: S3Client, run_consumer: Any
) -> None:
    """S3 errors have a window of their own (``UPLOAD_VERIFY_ERROR_WINDOW_S``): more failing
    HEADs than there are not-found checks, and the upload is still verified."""
    settings = Settings.from_env({**api_env, "UPLOAD_VERIFY_DELAYS_S": "0.05,0.05",
                                  "UPLOAD_VERIFY_ERROR_WINDOW_S": "30"})
    store, upload = await _pending_upload(redis, settings, finished=False)
    await s3.put_object(Bucket=settings.s3_bucket, Key=upload.key, Body=b"audio",
                        ContentType="audio/webm")
    heads = FailingHeads(s3, fail=5)
    await run_consumer(settings, s3_client=heads)

    await _wait_for_status(store, upload, "uploaded", "never verified")
    assert heads.heads == 6
    assert await redis.xlen("echo:{uploads}:dead") == 0


async def test_s3_errors_do_not_use_up_the_not_found_checks(
    api_env: dict[str, str], redis: RedisClient, s3: S3Client, run_consumer: Any
) -> None:
    """After an S3 error streak, a missing object still gets every one of its checks."""
    settings = Settings.from_env({**api_env, "UPLOAD_VERIFY_DELAYS_S": "0.05,0.05",
                                  "UPLOAD_VERIFY_ERROR_WINDOW_S": "30"})
    store, upload = await _pending_upload(redis, settings, finished=True)
    heads = FailingHeads(s3, fail=3)
    await run_consumer(settings, s3_client=heads)

    await _wait_for_status(store, upload, "failed", "never marked failed")
    chunk = await store.get_chunk(upload.conversation_id, upload.chunk_id)
    assert chunk is not None and chunk["error"] == "upload not found"
    assert heads.heads == 3 + 3  # the errors, then the first check and its two deferrals
