"""Housekeeping of a group against a real Redis: due deferrals move back into the stream,
retention trims only what every group is done with, dead consumers are reaped, and the
backlog report, its lag counted where Redis reports none (as after a restart)
(``streams.housekeeping``, ``streams.retention``, ``streams.backlog``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from streams_support import DEADLINE_S, read_group, read_stream, running, wait_all_acked
from waiting import wait_until

from config import Settings
from devstack.servers import RedisServer
from events.catalogue import STREAMS
from storage.redis_client import RedisClient, open_redis
from streams.backlog import backlog_rows, format_rows
from streams.config import StreamsConfig
from streams.envelope import Envelope
from streams.metrics import StreamMetrics
from streams.names import StreamNames
from streams.publisher import Publisher
from streams.retention import trim
from streams.scripts import Scripts
from streams.spec import EventContext, GroupSpec


async def test_deferred_event_enters_the_stream_again_only_when_due(
    r: RedisClient, streams_config: StreamsConfig, names: StreamNames, publisher: Publisher
) -> None:
    seen: list[tuple[str, int]] = []

    async def handle(ctx: EventContext) -> None:
        seen.append((ctx.type, ctx.attempt))
        if ctx.attempt == 0:
            ctx.defer(0.3 if ctx.type == "later" else 3600)

    await publisher.publish("llm", "later", {})
    await publisher.publish("llm", "much-later", {})
    async with running(r, streams_config, GroupSpec("llm", "llm", handle)):
        await wait_until(lambda: ("later", 1) in seen, timeout_s=DEADLINE_S)
        await wait_all_acked(r, names, "llm", "llm")
    assert sorted(seen) == [("later", 0), ("later", 1), ("much-later", 0)]
    assert await r.zcard(names.keys("llm").delayed) == 1


async def test_retention_keeps_what_a_slow_group_has_not_acked(
    r: RedisClient, names: StreamNames, publisher: Publisher
) -> None:
    keys = names.keys("llm")
    await r.xgroup_create(keys.stream, "fast", id="0", mkstream=True)
    await r.xgroup_create(keys.stream, "slow", id="0")
    ids = await publisher.publish_many("llm", [Envelope("e", {"n": n}) for n in range(100)])
    # The fast group reads and acks everything; the slow one has read 30 and acked 10.
    fast = await read_group(r, "fast", "f", keys.stream, count=100)
    await r.xack(keys.stream, "fast", *[eid for eid, _ in fast])
    slow = await read_group(r, "slow", "s", keys.stream, count=30)
    await r.xack(keys.stream, "slow", *[eid for eid, _ in slow[:10]])
    scripts = Scripts.load(r)
    assert await trim(scripts, keys, max_age_s=3600) == 0  # young: kept for the max age
    removed = await trim(scripts, keys, max_age_s=0.001)
    assert removed == 10
    remaining = [eid for eid, _ in await read_stream(r, keys.stream)]
    assert remaining == ids[10:]
    # Everything the slow group has not acked is still readable.
    rest = await read_group(r, "slow", "s", keys.stream, count=1000)
    assert [eid for eid, _ in rest] == ids[30:]
    pend = await r.xpending_range(keys.stream, "slow", "-", "+", 100)
    assert [p["message_id"] for p in pend] == ids[10:100]


async def test_retention_never_trims_undelivered_entries_of_a_slow_group(
    r: RedisClient, names: StreamNames, publisher: Publisher
) -> None:
    keys = names.keys("llm")
    await r.xgroup_create(keys.stream, "fast", id="0", mkstream=True)
    await r.xgroup_create(keys.stream, "slow", id="$")
    await publisher.publish_many("llm", [Envelope("e", {}) for _ in range(5)])
    fast = await read_group(r, "fast", "f", keys.stream, count=100)
    await r.xack(keys.stream, "fast", *[eid for eid, _ in fast])
    assert await trim(Scripts.load(r), keys, max_age_s=0.001) == 0
    assert await r.xlen(keys.stream) == 5


async def test_dead_consumers_are_removed_only_with_nothing_pending(
    r: RedisClient, names: StreamNames, publisher: Publisher
) -> None:
    keys = names.keys("llm")
    await r.xgroup_create(keys.stream, "llm", id="0", mkstream=True)
    await publisher.publish("llm", "e", {})
    await read_group(r, "llm", "holder", keys.stream, count=1)
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
    r: RedisClient, names: StreamNames, publisher: Publisher
) -> None:
    keys = names.keys("uploads")
    await r.xgroup_create(keys.stream, "upload-confirmation", id="0", mkstream=True)
    await publisher.publish_many("uploads", [Envelope("e", {}) for _ in range(4)])
    await read_group(r, "upload-confirmation", "c", keys.stream, count=1)
    rows = await backlog_rows(r, names, STREAMS)
    by_key = {(row.stream, row.group): row for row in rows}
    row = by_key[("uploads", "upload-confirmation")]
    assert (row.length, row.lag, row.pending, row.consumers) == (4, 3, 1, 1)
    assert ("llm", "-") in by_key
    text = format_rows(rows)
    assert text.splitlines()[0].split() == ["stream", "group", "length", "lag", "pending",
                                            "oldest_s", "consumers", "dead", "delayed"]
    assert json.loads(format_rows(rows, as_json=True))[0]["stream"] == "uploads"


async def test_backlog_counts_the_lag_when_redis_reports_none(
    r: RedisClient, names: StreamNames, publisher: Publisher
) -> None:
    """After XGROUP SETID without ENTRIESREAD to an id inside the stream, Redis 7.0 reports
    the lag as nil (as after a restart): the backlog counts it, the gauges use it."""
    keys = names.keys("llm")
    await r.xgroup_create(keys.stream, "llm", id="0", mkstream=True)
    ids = await publisher.publish_many("llm", [Envelope("e", {}) for _ in range(10)])
    await r.xgroup_setid(keys.stream, "llm", ids[2])
    [group] = await r.xinfo_groups(keys.stream)
    assert group["lag"] is None  # what Redis says; the fallback below is what we report
    [row] = [row for row in await backlog_rows(r, names, ["llm"])]
    assert (row.lag, row.lag_source) == (7, "counted")
    registry = CollectorRegistry()
    StreamMetrics(registry).refresh([row])
    assert registry.get_sample_value(
        "echo_stream_lag", {"stream": "llm", "group": "llm"}) == 7
    [capped] = await backlog_rows(r, names, ["llm"], lag_count_cap=5)
    assert (capped.lag, capped.lag_source) == (5, "capped")
    assert format_rows([capped]).splitlines()[1].split()[3] == ">=5"
    [exact] = await backlog_rows(r, names, ["llm"], lag_count_cap=7)
    assert (exact.lag, exact.lag_source) == (7, "counted")


@pytest.mark.slow
async def test_backlog_lag_after_a_real_redis_restart(
    tmp_path: Path, stream_settings: Settings, streams_config: StreamsConfig
) -> None:
    server = RedisServer(tmp_path / "redis", persistent=True,
                         extra_args=("--appendfsync", "always"))
    await server.start()
    try:
        settings = stream_settings.replace(redis_url=server.url)
        names = StreamNames(streams_config.key_prefix)
        keys = names.keys("llm")
        async with open_redis(settings) as client:
            await client.xgroup_create(keys.stream, "llm", id="0", mkstream=True)
            await Publisher.from_config(client, streams_config).publish_many(
                "llm", [Envelope("e", {}) for _ in range(10)])
            await client.xreadgroup("llm", "c", {keys.stream: ">"}, count=3)
            [before] = await backlog_rows(client, names, ["llm"])
            assert (before.lag, before.lag_source) == (7, "redis")
        server.kill()
        await server.start()
        async with open_redis(settings) as client:
            [group] = await client.xinfo_groups(keys.stream)
            assert group["lag"] is None
            [after] = await backlog_rows(client, names, ["llm"])
            assert (after.lag, after.lag_source, after.pending) == (7, "counted", 3)
    finally:
        server.stop()
