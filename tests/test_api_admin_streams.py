"""The admin API of streams and dead letters (``/api/admin``): Bearer ADMIN_TOKEN, backlog rows,
dead letters a page at a time, replay handled once, drop."""

from __future__ import annotations

from dataclasses import fields
from typing import Any

import pytest
from api_support import HOST_HEADERS, ApiClient
from streams_support import DEADLINE_S, make_dead_letters, read_stream, running
from waiting import wait_until

from events.catalogue import STREAMS
from storage.redis_client import RedisClient
from streams.backlog import BacklogRow
from streams.config import StreamsConfig
from streams.names import StreamNames
from streams.publisher import Publisher
from streams.spec import EventContext, GroupSpec

A = "/api/admin"
NAMES = StreamNames("echo")


@pytest.fixture
def app_streams() -> StreamsConfig:
    """The application's streams (default prefix ``echo``), with a short lease."""
    return StreamsConfig(key_prefix="echo", lease_s=2, shutdown_grace_s=2)


@pytest.fixture
def app_publisher(redis: RedisClient, app_streams: StreamsConfig) -> Publisher:
    return Publisher.from_config(redis, app_streams)


async def letters(client: ApiClient, query: str) -> dict[str, Any]:
    resp = await client.get(f"{A}/dead-letters?{query}", headers=HOST_HEADERS)
    assert resp.status == 200, await resp.text()
    return dict(await resp.json())


async def test_admin_routes_refuse_a_missing_or_wrong_token_with_401_saying_nothing_of_ids(
    client: ApiClient, redis: RedisClient, app_streams: StreamsConfig, app_publisher: Publisher,
) -> None:
    await make_dead_letters(redis, app_streams, app_publisher, "llm", 1)
    [(real_id, _)] = await read_stream(redis, NAMES.keys("llm").dead)
    bodies = set()
    for letter_id in (real_id, "1-0"):
        for method, path in [
            ("GET", f"{A}/streams"), ("GET", f"{A}/dead-letters?stream=llm"),
            ("GET", f"{A}/dead-letters?stream=nope"),
            ("POST", f"{A}/dead-letters/llm/{letter_id}/replay"),
            ("DELETE", f"{A}/dead-letters/llm/{letter_id}"),
        ]:
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic x"},
                            {"Authorization": f"Bearer {HOST_HEADERS['Authorization'][7:]}x"}):
                resp = await client.request(method, path, headers=headers)
                assert resp.status == 401, (method, path, headers)
                body = await resp.json()
                bodies.add((body["detail"], body["code"]))
    assert bodies == {("a valid host token is required", "unauthorized")}
    assert await redis.xlen(NAMES.keys("llm").dead) == 1
    assert await redis.xlen(NAMES.stream("llm")) == 1


async def test_streams_answers_the_backlog_rows_of_every_stream(
    client: ApiClient, redis: RedisClient, app_streams: StreamsConfig, app_publisher: Publisher,
) -> None:
    await make_dead_letters(redis, app_streams, app_publisher, "uploads", 2)
    resp = await client.get(f"{A}/streams", headers=HOST_HEADERS)
    assert resp.status == 200
    rows = (await resp.json())["streams"]
    assert {tuple(sorted(row)) for row in rows} == {tuple(sorted(f.name for f in fields(BacklogRow)))}
    assert {row["stream"] for row in rows} == set(STREAMS)
    [uploads] = [row for row in rows if row["stream"] == "uploads"]
    assert (uploads["group"], uploads["length"], uploads["dead_letters"], uploads["pending"]) == (
        "g", 2, 2, 0)


async def test_a_replayed_dead_letter_is_handled_once_and_a_second_replay_is_404(
    client: ApiClient, redis: RedisClient, app_streams: StreamsConfig, app_publisher: Publisher,
) -> None:
    broken = True
    runs: list[EventContext] = []

    async def handle(ctx: EventContext) -> None:
        if broken:
            raise RuntimeError("provider down")
        runs.append(ctx)

    spec = GroupSpec("transcription", "transcription", handle, max_deliveries=1)
    original = await app_publisher.publish("transcription", "chunk.uploaded", {"chunk_id": "c1"},
                                           idempotency_key="transcribe:c1")
    async with running(redis, app_streams, spec):
        await wait_until(lambda: redis.xlen(NAMES.keys("transcription").dead),
                         timeout_s=DEADLINE_S)
        page = await letters(client, "stream=transcription")
        [letter] = page["dead_letters"]
        assert page["next_after"] is None
        assert (letter["original_id"], letter["reason"], letter["last_error"]) == (
            original, "handler failed 1 times: RuntimeError: provider down",
            "RuntimeError: provider down")
        assert (letter["attempts"], letter["deliveries"], letter["idempotency_key"]) == (
            1, 1, "transcribe:c1")
        broken = False
        path = f"{A}/dead-letters/transcription/{letter['id']}"
        resp = await client.post(f"{path}/replay", headers=HOST_HEADERS)
        assert resp.status == 200, await resp.text()
        replayed_as = (await resp.json())["replayed_as"]
        again = await client.post(f"{path}/replay", headers=HOST_HEADERS)
        assert again.status == 404 and (await again.json())["code"] == "not_found"

        async def caught_up() -> bool:
            [info] = await redis.xinfo_groups(NAMES.stream("transcription"))
            return bool(info["lag"] == 0 and info["pending"] == 0)

        await wait_until(caught_up, timeout_s=DEADLINE_S)
    assert [(run.entry_id, run.attempts, run.idempotency_key) for run in runs] == [
        (replayed_as, 1, "transcribe:c1")]
    assert (await letters(client, "stream=transcription"))["dead_letters"] == []


async def test_dead_letters_come_a_page_at_a_time_and_a_drop_removes_one(
    client: ApiClient, redis: RedisClient, app_streams: StreamsConfig, app_publisher: Publisher,
) -> None:
    ids = await make_dead_letters(redis, app_streams, app_publisher, "llm", 3)
    first = await letters(client, "stream=llm&count=2")
    second = await letters(client, f"stream=llm&count=2&after={first['next_after']}")
    listed = first["dead_letters"] + second["dead_letters"]
    assert second["next_after"] is None
    assert sorted(d["original_id"] for d in listed) == sorted(ids)
    assert all(d["reason"] == "unknown event type 'unknown'" for d in listed)

    dropped = listed[0]["id"]
    resp = await client.delete(f"{A}/dead-letters/llm/{dropped}", headers=HOST_HEADERS)
    assert resp.status == 200 and (await resp.json())["dropped"] is True
    resp = await client.delete(f"{A}/dead-letters/llm/{dropped}", headers=HOST_HEADERS)
    assert resp.status == 404
    remaining = (await letters(client, "stream=llm"))["dead_letters"]
    assert [d["id"] for d in remaining] == [d["id"] for d in listed[1:]]
    assert await redis.xlen(NAMES.stream("llm")) == 3  # nothing re-published


@pytest.mark.parametrize(("method", "path", "status", "code"), [
    ("GET", f"{A}/dead-letters", 400, "bad_request"),
    ("GET", f"{A}/dead-letters?stream=orders", 400, "unknown_stream"),
    ("GET", f"{A}/dead-letters?stream=llm&count=0", 400, "bad_request"),
    ("GET", f"{A}/dead-letters?stream=llm&count=many", 400, "bad_request"),
    ("GET", f"{A}/dead-letters?stream=llm&count=501", 400, "bad_request"),
    ("GET", f"{A}/dead-letters?stream=llm&after=yesterday", 400, "bad_request"),
    ("POST", f"{A}/dead-letters/orders/1-0/replay", 400, "unknown_stream"),
    ("DELETE", f"{A}/dead-letters/orders/1-0", 400, "unknown_stream"),
    ("POST", f"{A}/dead-letters/llm/1-0/replay", 404, "not_found"),
    ("POST", f"{A}/dead-letters/llm/not-an-id/replay", 404, "not_found"),
    ("DELETE", f"{A}/dead-letters/llm/1-0", 404, "not_found"),
])
async def test_bad_input_is_a_4xx_with_a_code(
    client: ApiClient, method: str, path: str, status: int, code: str
) -> None:
    resp = await client.request(method, path, headers=HOST_HEADERS)
    assert resp.status == status, await resp.text()
    body = await resp.json()
    assert body["code"] == code and isinstance(body["detail"], str)
