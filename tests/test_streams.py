"""The event-streams core against a real Redis: publish, consume, lease, retry, defer, dead letters."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs
from waiting import wait_until

from config import Settings
from events.catalogue import STREAMS, UPLOADS
from storage.redis_client import RedisClient, open_redis
from streams.backlog import backlog_rows, format_rows
from streams.config import StreamsConfig
from streams.envelope import Envelope, EnvelopeError, decode
from streams.names import StreamNames
from streams.publisher import Publisher
from streams.redis_types import REDIS_UNAVAILABLE_ERRORS
from streams.retention import trim
from streams.runtime import ConsumerRuntime
from streams.scripts import Scripts
from streams.spec import Defer, EventContext, GroupSpec

DEADLINE_S = 30.0


@pytest.fixture
def stream_settings(base_env: dict[str, str]) -> Settings:
    return Settings.from_env({**base_env, "STREAM_LEASE_S": "2", "SHUTDOWN_GRACE_S": "2"})


@pytest.fixture
def config(stream_settings: Settings) -> StreamsConfig:
    """The runtime's config: the settings' Redis prefix, short lease and grace."""
    return StreamsConfig(key_prefix=stream_settings.redis_key_prefix, lease_s=2,
                         shutdown_grace_s=2)


@pytest.fixture
async def r(stream_settings: Settings) -> AsyncIterator[RedisClient]:
    async with open_redis(stream_settings) as client:
        await client.flushdb()
        yield client


@pytest.fixture
def names(config: StreamsConfig) -> StreamNames:
    return StreamNames(config.key_prefix)


@pytest.fixture
def publisher(r: RedisClient, config: StreamsConfig) -> Publisher:
    return Publisher.from_config(r, config)


@asynccontextmanager
async def running(
    r: RedisClient, config: StreamsConfig, *specs: GroupSpec, name: str = "c1",
    grace_s: float = 2.0,
) -> AsyncIterator[ConsumerRuntime]:
    runtime = ConsumerRuntime(r, config, CollectorRegistry(), list(specs), consumer_name=name)
    await runtime.start()
    try:
        yield runtime
    finally:
        await runtime.stop(grace_s)


async def pending(r: RedisClient, names: StreamNames, stream: str, group: str) -> int:
    return int((await r.xpending(names.stream(stream), group))["pending"])


def test_names_share_one_hash_tag_per_stream() -> None:
    keys = StreamNames("acme").keys(UPLOADS)
    assert keys.stream == "acme:{uploads}"
    assert keys.dead == "acme:{uploads}:dead"
    assert keys.delayed == "acme:{uploads}:delayed"
    assert [k.name for k in StreamNames().catalogue(STREAMS)] == ["uploads", "transcription", "llm"]


def test_envelope_round_trips_through_flat_fields() -> None:
    env = Envelope(type="upload.verify", payload={"n": 1}, idem="k", request_id="req-1")
    fields = env.fields()
    assert set(fields) == {"id", "type", "v", "created_ms", "idem", "request_id", "attempt",
                           "payload"}
    assert decode(fields) == env
    with pytest.raises(EnvelopeError):
        decode({**fields, "payload": "[1]"})
    with pytest.raises(EnvelopeError):
        decode({"type": "x"})


async def test_published_event_reaches_its_handler_typed_and_is_acked(
    r: RedisClient, config: StreamsConfig, names: StreamNames, publisher: Publisher
) -> None:
    seen: list[EventContext] = []

    async def handle(ctx: EventContext) -> None:
        seen.append(ctx)

    spec = GroupSpec("uploads", "confirm", handle, event_types={"up": lambda p: (p["n"], p["s"])})
    entry_id = await publisher.publish("uploads", "up", {"n": 3, "s": "x"},
                                       idempotency_key="idem-1", request_id="req-9")
    async with running(r, config, spec):
        await wait_until(lambda: bool(seen), timeout_s=DEADLINE_S)
        await wait_until(lambda: _eq(pending(r, names, "uploads", "confirm"), 0),
                         timeout_s=DEADLINE_S)
    ctx = seen[0]
    assert (ctx.entry_id, ctx.payload, ctx.idempotency_key, ctx.deliveries) == (
        entry_id, (3, "x"), "idem-1", 1)
    assert ctx.envelope.request_id == "req-9"
    raw = (await r.xrange(names.stream("uploads")))[0][1]
    assert raw["type"] == "up" and json.loads(raw["payload"]) == {"n": 3, "s": "x"}


async def _eq(awaitable: Awaitable[Any], expected: Any) -> bool:
    return (await awaitable) == expected


async def test_unknown_type_and_bad_payload_go_to_dead_letters_while_others_flow(
    r: RedisClient, config: StreamsConfig, names: StreamNames, publisher: Publisher
) -> None:
    handled: list[int] = []

    async def handle(ctx: EventContext) -> None:
        handled.append(ctx.payload)

    spec = GroupSpec("llm", "llm", handle, event_types={"job": lambda p: int(p["n"])})
    await publisher.publish("llm", "nonsense", {"n": 1})
    await publisher.publish("llm", "job", {"n": "not a number"})
    await r.xadd(names.stream("llm"), {"garbage": "1"})
    for n in range(5):
        await publisher.publish("llm", "job", {"n": n})
    async with running(r, config, spec):
        await wait_until(lambda: _eq(r.xlen(names.keys("llm").dead), 3), timeout_s=DEADLINE_S)
        await wait_until(lambda: len(handled) == 5, timeout_s=DEADLINE_S)
        await wait_until(lambda: _eq(pending(r, names, "llm", "llm"), 0), timeout_s=DEADLINE_S)
    dead = {f["dead_id"]: f for _, f in await r.xrange(names.keys("llm").dead)}
    reasons = sorted(f["dead_reason"] for f in dead.values())
    assert reasons[0].startswith("bad envelope: missing field")
    assert reasons[1].startswith("bad payload for 'job'")
    assert reasons[2] == "unknown event type 'nonsense'"
    unknown = next(f for f in dead.values() if f.get("type") == "nonsense")
    assert unknown["dead_stream"] == names.stream("llm") and unknown["dead_deliveries"] == "1"
    assert sorted(handled) == [0, 1, 2, 3, 4]


async def test_failing_handler_is_retried_with_growing_delivery_count_until_it_succeeds(
    r: RedisClient, config: StreamsConfig, names: StreamNames, publisher: Publisher
) -> None:
    deliveries: list[int] = []
    others: list[int] = []

    async def handle(ctx: EventContext) -> None:
        if ctx.type == "flaky":
            deliveries.append(ctx.deliveries)
            if ctx.deliveries < 3:
                raise RuntimeError("not yet")
        else:
            others.append(ctx.payload["n"])

    spec = GroupSpec("llm", "llm", handle, concurrency=1, retry_base_s=0.05)
    await publisher.publish("llm", "flaky", {})
    for n in range(20):
        await publisher.publish("llm", "other", {"n": n})
    async with running(r, config, spec) as rt:
        await wait_until(lambda: deliveries == [1, 2, 3] and len(others) == 20,
                         timeout_s=DEADLINE_S)
        await wait_until(lambda: _eq(pending(r, names, "llm", "llm"), 0), timeout_s=DEADLINE_S)
        assert rt.metrics.retried.labels("llm", "llm")._value.get() == 2
    assert await r.hlen(names.keys("llm").errors) == 0
    assert await r.xlen(names.keys("llm").dead) == 0


async def test_poison_event_lands_in_dead_letters_after_max_deliveries_while_others_flow(
    r: RedisClient, config: StreamsConfig, names: StreamNames, publisher: Publisher
) -> None:
    poison_runs: list[int] = []
    others: list[int] = []

    async def handle(ctx: EventContext) -> None:
        if ctx.type == "poison":
            poison_runs.append(ctx.deliveries)
            raise ValueError("cannot digest")
        others.append(ctx.payload["n"])

    spec = GroupSpec("transcription", "transcription", handle, max_deliveries=5,
                     retry_base_s=0.02)
    poison_id = await publisher.publish("transcription", "poison", {"x": 1})
    for n in range(50):
        await publisher.publish("transcription", "ok", {"n": n})
    async with running(r, config, spec):
        await wait_until(lambda: _eq(r.xlen(names.keys("transcription").dead), 1),
                         timeout_s=DEADLINE_S)
        await wait_until(lambda: _eq(pending(r, names, "transcription", "transcription"), 0),
                         timeout_s=DEADLINE_S)
    assert poison_runs == [1, 2, 3, 4, 5]
    assert sorted(others) == list(range(50))
    [(_, dead)] = await r.xrange(names.keys("transcription").dead)
    assert dead["dead_stream"] == names.stream("transcription")
    assert dead["dead_id"] == poison_id
    assert dead["dead_deliveries"] == "5"
    assert dead["type"] == "poison"
    assert dead["dead_reason"] == "handler failed 5 times: ValueError: cannot digest"
    assert dead["dead_last_error"] == "ValueError: cannot digest"
    assert dead["dead_attempts"] == "5"
    assert int(dead["dead_ms"]) > 0


async def test_deferred_event_runs_again_later_without_counting_as_a_failure(
    r: RedisClient, config: StreamsConfig, names: StreamNames, publisher: Publisher
) -> None:
    runs: list[tuple[int, int, int]] = []

    async def handle(ctx: EventContext) -> None:
        runs.append((ctx.attempt, ctx.deliveries, ctx.payload.get("checks", 0)))
        if ctx.attempt < 3:
            ctx.defer(0.05, {"checks": ctx.payload.get("checks", 0) + 1})

    spec = GroupSpec("uploads", "upload-confirmation", handle, max_deliveries=1)
    await publisher.publish("uploads", "verify", {}, idempotency_key="k")
    async with running(r, config, spec) as rt:
        await wait_until(lambda: len(runs) == 4, timeout_s=DEADLINE_S)
        await wait_until(lambda: _eq(pending(r, names, "uploads", "upload-confirmation"), 0),
                         timeout_s=DEADLINE_S)
        assert rt.metrics.deferred.labels("uploads", "upload-confirmation")._value.get() == 3
    assert runs == [(0, 1, 0), (1, 1, 1), (2, 1, 2), (3, 1, 3)]
    assert await r.zcard(names.keys("uploads").delayed) == 0
    assert await r.xlen(names.keys("uploads").dead) == 0


async def test_deferred_event_enters_the_stream_again_only_when_due(
    r: RedisClient, config: StreamsConfig, names: StreamNames, publisher: Publisher
) -> None:
    seen: list[tuple[str, int]] = []

    async def handle(ctx: EventContext) -> None:
        seen.append((ctx.type, ctx.attempt))
        if ctx.attempt == 0:
            ctx.defer(0.3 if ctx.type == "later" else 3600)

    await publisher.publish("llm", "later", {})
    await publisher.publish("llm", "much-later", {})
    async with running(r, config, GroupSpec("llm", "llm", handle)):
        await wait_until(lambda: ("later", 1) in seen, timeout_s=DEADLINE_S)
        await wait_until(lambda: _eq(pending(r, names, "llm", "llm"), 0), timeout_s=DEADLINE_S)
    assert sorted(seen) == [("later", 0), ("later", 1), ("much-later", 0)]
    assert await r.zcard(names.keys("llm").delayed) == 1


async def test_handler_running_three_leases_runs_once_while_another_consumer_watches(
    r: RedisClient, config: StreamsConfig, names: StreamNames, publisher: Publisher
) -> None:
    lease_s = 1.0
    starts: list[str] = []
    done: list[str] = []

    def spec_for(consumer: str) -> GroupSpec:
        async def handle(ctx: EventContext) -> None:
            starts.append(consumer)
            await asyncio.sleep(3 * lease_s)  # the handler's work: three leases long
            done.append(consumer)
        return GroupSpec("llm", "llm", handle, lease_s=lease_s)

    await publisher.publish("llm", "slow", {})
    async with running(r, config, spec_for("a"), name="a"):
        await wait_until(lambda: starts == ["a"], timeout_s=DEADLINE_S)
        async with running(r, config, spec_for("b"), name="b"):
            await wait_until(lambda: done == ["a"], timeout_s=DEADLINE_S)
            await wait_until(lambda: _eq(pending(r, names, "llm", "llm"), 0), timeout_s=DEADLINE_S)
            # Nothing to wait on: a wrong reclaim would show up within a lease.
            await asyncio.sleep(lease_s)
    assert starts == ["a"]


async def test_stop_mid_work_loses_nothing(
    r: RedisClient, config: StreamsConfig, names: StreamNames, publisher: Publisher
) -> None:
    finished: dict[str, int] = {}

    async def handle(ctx: EventContext) -> None:
        await asyncio.sleep(ctx.payload["sleep_s"])  # the handler's work, cut off by stop
        finished[ctx.envelope.id] = finished.get(ctx.envelope.id, 0) + 1

    spec = GroupSpec("llm", "llm", handle, concurrency=2, lease_s=1.0)
    ids = [(await publisher.publish_many("llm", [Envelope("job", {"sleep_s": 0.5})]))[0]
           for _ in range(10)]
    first = ConsumerRuntime(r, config, CollectorRegistry(), [spec], consumer_name="a")
    await first.start()
    await wait_until(lambda: len(finished) >= 1, timeout_s=DEADLINE_S)
    await first.stop(grace_s=0.1)  # some handlers are cut off, the rest never started
    async with running(r, config, spec, name="b"):
        await wait_until(lambda: len(finished) == 10, timeout_s=DEADLINE_S)
        await wait_until(lambda: _eq(pending(r, names, "llm", "llm"), 0), timeout_s=DEADLINE_S)
    assert len(ids) == 10


async def test_retention_keeps_what_a_slow_group_has_not_acked(
    r: RedisClient, config: StreamsConfig, names: StreamNames, publisher: Publisher
) -> None:
    keys = names.keys("llm")
    await r.xgroup_create(keys.stream, "fast", id="0", mkstream=True)
    await r.xgroup_create(keys.stream, "slow", id="0")
    ids = await publisher.publish_many("llm", [Envelope("e", {"n": n}) for n in range(100)])
    # The fast group reads and acks everything; the slow one has read 30 and acked 10.
    fast = await r.xreadgroup("fast", "f", {keys.stream: ">"}, count=100)
    await r.xack(keys.stream, "fast", *[eid for eid, _ in fast[0][1]])
    slow = await r.xreadgroup("slow", "s", {keys.stream: ">"}, count=30)
    await r.xack(keys.stream, "slow", *[eid for eid, _ in slow[0][1][:10]])
    scripts = Scripts.load(r)
    assert await trim(scripts, keys, max_age_s=3600) == 0  # young: kept for the max age
    removed = await trim(scripts, keys, max_age_s=0.001)
    assert removed == 10
    remaining = [eid for eid, _ in await r.xrange(keys.stream)]
    assert remaining == ids[10:]
    # Everything the slow group has not acked is still readable.
    rest = await r.xreadgroup("slow", "s", {keys.stream: ">"}, count=1000)
    assert [eid for eid, _ in rest[0][1]] == ids[30:]
    pend = await r.xpending_range(keys.stream, "slow", "-", "+", 100)
    assert [p["message_id"] for p in pend] == ids[10:100]


async def test_retention_never_trims_undelivered_entries_of_a_slow_group(
    r: RedisClient, names: StreamNames, publisher: Publisher
) -> None:
    keys = names.keys("llm")
    await r.xgroup_create(keys.stream, "fast", id="0", mkstream=True)
    await r.xgroup_create(keys.stream, "slow", id="$")
    await publisher.publish_many("llm", [Envelope("e", {}) for _ in range(5)])
    fast = await r.xreadgroup("fast", "f", {keys.stream: ">"}, count=100)
    await r.xack(keys.stream, "fast", *[eid for eid, _ in fast[0][1]])
    assert await trim(Scripts.load(r), keys, max_age_s=0.001) == 0
    assert await r.xlen(keys.stream) == 5


async def test_dead_consumers_are_removed_only_with_nothing_pending(
    r: RedisClient, config: StreamsConfig, names: StreamNames, publisher: Publisher
) -> None:
    keys = names.keys("llm")
    await r.xgroup_create(keys.stream, "llm", id="0", mkstream=True)
    await publisher.publish("llm", "e", {})
    await r.xreadgroup("llm", "holder", {keys.stream: ">"}, count=1)
    await r.xgroup_createconsumer(keys.stream, "llm", "idle")

    async def idle_ms() -> int:
        consumers = await r.xinfo_consumers(keys.stream, "llm")
        return next(int(c["idle"]) for c in consumers if c["name"] == "idle")

    await wait_until(idle_ms, until=lambda ms: ms > 10, message="never idle past 10 ms")
    removed = await Scripts.load(r).reap_consumers(keys=[keys.stream], args=["llm", "me", 10])
    assert removed == ["idle"]
    consumers = {c["name"] for c in await r.xinfo_consumers(keys.stream, "llm")}
    assert consumers == {"holder"}


async def test_backlog_reports_each_stream_and_group(
    r: RedisClient, config: StreamsConfig, names: StreamNames, publisher: Publisher
) -> None:
    keys = names.keys("uploads")
    await r.xgroup_create(keys.stream, "upload-confirmation", id="0", mkstream=True)
    await publisher.publish_many("uploads", [Envelope("e", {}) for _ in range(4)])
    await r.xreadgroup("upload-confirmation", "c", {keys.stream: ">"}, count=1)
    rows = await backlog_rows(r, names, STREAMS)
    by_key = {(row.stream, row.group): row for row in rows}
    row = by_key[("uploads", "upload-confirmation")]
    assert (row.length, row.lag, row.pending, row.consumers) == (4, 3, 1, 1)
    assert ("llm", "-") in by_key
    text = format_rows(rows)
    assert text.splitlines()[0].split() == ["stream", "group", "length", "lag", "pending",
                                            "oldest_s", "consumers", "dead", "delayed"]
    assert json.loads(format_rows(rows, as_json=True))[0]["stream"] == "uploads"


async def test_runtime_recreates_a_deleted_group(
    r: RedisClient, config: StreamsConfig, names: StreamNames, publisher: Publisher
) -> None:
    seen: list[int] = []

    async def handle(ctx: EventContext) -> None:
        seen.append(ctx.payload["n"])

    async with running(r, config, GroupSpec("llm", "llm", handle)):
        await publisher.publish("llm", "e", {"n": 1})
        await wait_until(lambda: seen == [1], timeout_s=DEADLINE_S)
        await r.delete(names.stream("llm"))
        await publisher.publish("llm", "e", {"n": 2})  # a new stream without the group
        await wait_until(lambda: seen == [1, 2], timeout_s=DEADLINE_S)


async def test_publish_raises_when_redis_is_unreachable(
    stream_settings: Settings, config: StreamsConfig
) -> None:
    from devstack.servers import free_port

    down = stream_settings.replace(redis_url=f"redis://127.0.0.1:{free_port()}/0")
    async with open_redis(down) as client:
        with pytest.raises(REDIS_UNAVAILABLE_ERRORS):
            await Publisher.from_config(client, config).publish("llm", "e", {})


async def test_metrics_count_what_the_runtime_did(
    r: RedisClient, config: StreamsConfig, publisher: Publisher
) -> None:
    async def handle(ctx: EventContext) -> None:
        pass

    registry = CollectorRegistry()
    runtime = ConsumerRuntime(r, config, registry, [GroupSpec("llm", "llm", handle)],
                              consumer_name="m")
    await publisher.publish_many("llm", [Envelope("e", {}) for _ in range(3)])
    await runtime.start()
    try:
        labels = {"stream": "llm", "group": "llm"}
        await wait_until(
            lambda: registry.get_sample_value("echo_stream_processed_total", labels) == 3,
            timeout_s=DEADLINE_S)
        assert registry.get_sample_value("echo_stream_delivery_count_count", labels) == 3
        assert registry.get_sample_value(
            "echo_stream_handler_duration_seconds_count", labels) == 3
    finally:
        await runtime.stop(1)


def test_defer_carries_its_delay_and_payload_update() -> None:
    exc = Defer(2.5, {"a": 1})
    assert (exc.delay_s, exc.payload_update) == (2.5, {"a": 1})


async def test_consumers_ctx_runs_groups_inside_an_aiohttp_app(
    r: RedisClient, stream_settings: Settings, publisher: Publisher
) -> None:
    from aiohttp import web

    from gateway.appkeys import CONSUMERS, METRICS_REGISTRY, REDIS, SETTINGS
    from gateway.consumers import consumers_ctx

    seen: list[str] = []

    async def handle(ctx: EventContext) -> None:
        seen.append(ctx.type)

    app = web.Application()
    app[SETTINGS] = stream_settings
    app[REDIS] = r
    app[METRICS_REGISTRY] = CollectorRegistry()
    app.cleanup_ctx.append(consumers_ctx([lambda _app: GroupSpec("llm", "llm", handle)],
                                         concurrency=2))
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        assert app[CONSUMERS].groups[0].concurrency == 2
        await publisher.publish("llm", "hello", {})
        await wait_until(lambda: seen == ["hello"], timeout_s=DEADLINE_S)
    finally:
        await runner.cleanup()


def test_registry_rejects_unknown_group_names() -> None:
    from gateway.groups import UnknownGroupError, resolve

    factories = {"llm": lambda app: GroupSpec("llm", "llm", _noop)}
    assert resolve(["llm"], factories) == [factories["llm"]]
    assert resolve([], factories) == [factories["llm"]]
    with pytest.raises(UnknownGroupError, match="unknown group"):
        resolve(["nope"], factories)


async def _noop(ctx: EventContext) -> None:
    pass


@pytest.mark.slow
async def test_consumers_survive_a_redis_outage_and_recover_on_their_own(
    tmp_path: Any, stream_settings: Settings, config: StreamsConfig
) -> None:
    from devstack.servers import RedisServer

    server = RedisServer(tmp_path / "redis")
    await server.start()
    settings = stream_settings.replace(redis_url=server.url)
    seen: list[int] = []

    async def handle(ctx: EventContext) -> None:
        seen.append(ctx.payload["n"])

    try:
        async with open_redis(settings) as client:
            publisher = Publisher.from_config(client, config)
            async with running(client, config, GroupSpec("llm", "llm", handle)):
                await publisher.publish("llm", "e", {"n": 1})
                await wait_until(lambda: seen == [1], timeout_s=DEADLINE_S)
                with capture_logs() as logs:
                    server.kill()
                    await wait_until(
                        lambda: any(e["event"] == "stream_redis_unavailable" for e in logs),
                        timeout_s=DEADLINE_S, message="no consumer loop met the outage")
                await server.start()  # empty again: stream and group are gone
                await wait_until(lambda: publisher.publish("llm", "e", {"n": 2}),
                                 timeout_s=DEADLINE_S, retry_on=REDIS_UNAVAILABLE_ERRORS)
                await wait_until(lambda: 2 in seen, timeout_s=DEADLINE_S)
    finally:
        server.stop()
