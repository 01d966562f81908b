"""Dead-letter operations against a real Redis (``streams.deadletters``): a page at a time,
replay (re-published and removed in one script, handled exactly once), drop."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import CollectorRegistry
from redis.asyncio.cluster import RedisCluster
from streams_support import (
    DEADLINE_S,
    as_text,
    make_dead_letters,
    read_stream,
    running,
    wait_all_acked,
)
from waiting import wait_until

from config import Settings
from storage.redis_client import RedisClient, open_redis
from streams.backlog import backlog_rows
from streams.config import StreamsConfig
from streams.deadletters import DeadLetterNotReplayable, DeadLetters
from streams.metrics import StreamMetrics
from streams.names import StreamNames
from streams.publisher import Publisher
from streams.spec import EventContext, GroupSpec


@pytest.fixture
def dead_letters(r: RedisClient, names: StreamNames) -> DeadLetters:
    return DeadLetters(r, names)


async def group_caught_up(r: RedisClient, names: StreamNames, stream: str, group: str) -> bool:
    """Every entry of the stream was delivered to ``group`` and acked: nothing more can come."""
    [info] = [g for g in await r.xinfo_groups(names.stream(stream)) if g["name"] == group]
    return bool(info["lag"] == 0 and info["pending"] == 0)


async def test_replayed_dead_letter_is_handled_exactly_once_even_when_replayed_twice(
    r: RedisClient, streams_config: StreamsConfig, names: StreamNames, publisher: Publisher,
    dead_letters: DeadLetters,
) -> None:
    """A handler that dedupes its effect on the idempotency key handles the replay (the dead
    run recorded no effect), once, as a fresh run; replaying again re-publishes nothing."""
    broken = True
    runs: list[EventContext] = []

    async def handle(ctx: EventContext) -> None:
        if broken and ctx.attempt == 0:
            ctx.defer(0.01)  # a deferral before the failures: the replay starts from 0
        if broken:
            raise RuntimeError("downstream refused")
        runs.append(ctx)
        assert await r.set(f"done:{ctx.idempotency_key}", "1", nx=True), "effect repeated"

    spec = GroupSpec("llm", "llm", handle, max_deliveries=2, retry_base_s=0.02)
    original_id = await publisher.publish("llm", "summarize", {"c": "c1"},
                                          idempotency_key="summary:c1:1")
    async with running(r, streams_config, spec):
        await wait_until(lambda: r.xlen(names.keys("llm").dead), timeout_s=DEADLINE_S)
        [letter] = (await dead_letters.list("llm")).letters
        assert (letter.reason, letter.last_error) == (
            "handler failed 2 times: RuntimeError: downstream refused",
            "RuntimeError: downstream refused")
        assert (letter.group, letter.attempts, letter.deliveries) == ("llm", 2, 2)
        assert (letter.type, letter.idempotency_key, letter.payload["c"]) == (
            "summarize", "summary:c1:1", "c1")
        assert letter.original_id != original_id  # the deferred copy is a later entry
        broken = False

        first, second = await asyncio.gather(dead_letters.replay("llm", letter.id),
                                              dead_letters.replay("llm", letter.id))
        assert [first is None, second is None].count(True) == 1
        assert await dead_letters.replay("llm", letter.id) is None
        await wait_until(lambda: group_caught_up(r, names, "llm", "llm"), timeout_s=DEADLINE_S)
        await wait_all_acked(r, names, "llm", "llm")
    [run] = runs
    assert run.entry_id == (first or second)
    assert (run.attempts, run.attempt, run.envelope.id) == (1, 0, letter.event_id)
    assert await r.get("done:summary:c1:1") == "1"
    assert await r.xlen(names.keys("llm").dead) == 0


async def test_drop_removes_the_letter_and_nothing_is_published(
    r: RedisClient, streams_config: StreamsConfig, names: StreamNames, publisher: Publisher,
    dead_letters: DeadLetters,
) -> None:
    await make_dead_letters(r, streams_config, publisher, "uploads", 2)
    kept, dropped = (await dead_letters.list("uploads")).letters
    length = await r.xlen(names.stream("uploads"))
    assert await dead_letters.drop("uploads", dropped.id) is True
    assert await dead_letters.drop("uploads", dropped.id) is False
    assert await dead_letters.get("uploads", dropped.id) is None
    assert await dead_letters.replay("uploads", dropped.id) is None
    assert [d.id for d in (await dead_letters.list("uploads")).letters] == [kept.id]
    assert await r.xlen(names.stream("uploads")) == length


async def test_list_pages_through_the_letters_oldest_first_with_a_cursor(
    r: RedisClient, streams_config: StreamsConfig, publisher: Publisher,
    dead_letters: DeadLetters,
) -> None:
    ids = await make_dead_letters(r, streams_config, publisher, "transcription", 5)
    seen: list[str] = []
    pages, after = 0, ""
    while True:
        page = await dead_letters.list("transcription", after=after, count=2)
        pages += 1
        seen += [d.original_id for d in page.letters]
        if page.next_after is None:
            break
        after = page.next_after
    assert (sorted(seen), pages) == (sorted(ids), 3)
    letter = (await dead_letters.list("transcription", count=1)).letters[0]
    assert letter.reason == "unknown event type 'unknown'"
    assert letter.original_id in ids and letter.type == "unknown"


async def test_bad_cursor_count_and_ids_are_refused_or_name_no_letter(
    dead_letters: DeadLetters,
) -> None:
    with pytest.raises(ValueError, match="after"):
        await dead_letters.list("llm", after="yesterday")
    with pytest.raises(ValueError, match="count"):
        await dead_letters.list("llm", count=0)
    assert await dead_letters.replay("llm", "not-an-id") is None
    assert await dead_letters.drop("llm", "0-0; FLUSHALL") is False
    assert (await dead_letters.list("llm")).letters == []


async def test_letter_without_an_event_is_not_replayable_and_stays(
    r: RedisClient, names: StreamNames, dead_letters: DeadLetters,
) -> None:
    """Dead-lettered after its entry was trimmed: nothing to re-publish, and nothing lost."""
    letter_id = as_text(await r.xadd(
        names.keys("llm").dead, {"dead_id": "1-0", "dead_reason": "gone", "dead_group": "llm"}))
    with pytest.raises(DeadLetterNotReplayable):
        await dead_letters.replay("llm", letter_id)
    assert await r.xlen(names.stream("llm")) == 0
    assert (await dead_letters.get("llm", letter_id)) is not None


async def test_dead_letter_and_delayed_gauges_follow_the_backlog(
    r: RedisClient, streams_config: StreamsConfig, names: StreamNames, publisher: Publisher,
    dead_letters: DeadLetters,
) -> None:
    """``echo_stream_dead_letters`` (alerted on in deploy/prometheus/alerts.yml) goes down
    when a letter is dropped."""
    await make_dead_letters(r, streams_config, publisher, "llm", 2)
    registry = CollectorRegistry()
    metrics = StreamMetrics(registry)
    labels = {"stream": "llm", "group": "g"}
    metrics.refresh(await backlog_rows(r, names, ["llm"]))
    assert registry.get_sample_value("echo_stream_dead_letters", labels) == 2
    assert registry.get_sample_value("echo_stream_delayed", labels) == 0
    first = (await dead_letters.list("llm")).letters[0]
    await dead_letters.drop("llm", first.id)
    metrics.refresh(await backlog_rows(r, names, ["llm"]))
    assert registry.get_sample_value("echo_stream_dead_letters", labels) == 1


@pytest.mark.redis_cluster
async def test_list_replay_and_drop_work_on_a_three_master_cluster(
    base_env: dict[str, str], streams_config: StreamsConfig,
) -> None:
    """Replay is one script over a stream and its dead letters: one hash tag, one slot, so it
    runs on Cluster, for every stream wherever its slot lives."""
    async with open_redis(Settings.from_env(base_env)) as cluster:
        assert isinstance(cluster, RedisCluster)
        await cluster.flushall()
        names = StreamNames(streams_config.key_prefix)
        dead = DeadLetters(cluster, names)
        publisher = Publisher.from_config(cluster, streams_config)
        for stream in ("uploads", "transcription", "llm"):
            await make_dead_letters(cluster, streams_config, publisher, stream, 2)
            replayed, dropped = (await dead.list(stream)).letters
            new_id = await dead.replay(stream, replayed.id)
            assert new_id is not None and await dead.replay(stream, replayed.id) is None
            assert await dead.drop(stream, dropped.id) is True
            assert (await dead.list(stream)).letters == []
            last_id, fields = (await read_stream(cluster, names.stream(stream)))[-1]
            assert (last_id, fields["id"]) == (new_id, replayed.event_id)

