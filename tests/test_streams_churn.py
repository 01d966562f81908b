"""The streams runtime under churn (issue #14), against a real Redis: workers that die with
entries taken but not started, handlers that fail, workers killed mid-handler, the bound on
entries held while the reader and the reclaim both take. (The backlog's lag after a Redis
restart is in test_streams_housekeeping.py.)

A crash is emulated in-process by cancelling every task of a runtime where it stands (no
drain, no release, no final flush: what kill -9 leaves behind); test_streams_processes.py
does the same with a real process and SIGKILL.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest
from streams_support import crashable, pending, running
from waiting import wait_until

from config import Settings
from storage.redis_client import RedisClient
from streams.config import StreamsConfig
from streams.envelope import Envelope
from streams.names import StreamNames
from streams.publisher import Publisher
from streams.spec import EventContext, GroupSpec

DEADLINE_S = 30.0
LEASE_S = 1.0

#: What a handler saw: (consumer, deliveries, attempts, reclaimed_after_crash).
Seen = tuple[str, int, int, bool]


@pytest.fixture
def stream_settings(base_env: dict[str, str]) -> Settings:
    return Settings.from_env({**base_env, "STREAM_LEASE_S": str(LEASE_S)})


@pytest.fixture
def streams_config(stream_settings: Settings) -> StreamsConfig:
    """A short lease, so reclaims come quickly (overrides streams_support's)."""
    return StreamsConfig(key_prefix=stream_settings.redis_key_prefix, lease_s=LEASE_S,
                         shutdown_grace_s=1)


async def pending_of(r: RedisClient, stream_key: str, group: str, consumer: str) -> int:
    for c in await r.xinfo_consumers(stream_key, group):
        if c["name"] == consumer:
            return int(c["pending"])
    return 0


async def dead_letters(r: RedisClient, names: StreamNames, stream: str) -> list[dict[str, str]]:
    return [{str(k): str(v) for k, v in (fields or {}).items()}
            for _, fields in await r.xrange(names.keys(stream).dead) or []]


def recorder(seen: dict[str, list[Seen]], consumer: str,
             then: Callable[[EventContext], Awaitable[None]]) -> GroupSpec:
    async def handle(ctx: EventContext) -> None:
        seen.setdefault(ctx.entry_id, []).append(
            (consumer, ctx.deliveries, ctx.attempts, ctx.reclaimed_after_crash))
        await then(ctx)
    return GroupSpec("llm", "llm", handle, concurrency=1, lease_s=LEASE_S, max_deliveries=2,
                     retry_base_s=0.02)


async def _hang(ctx: EventContext) -> None:
    await asyncio.Event().wait()  # the handler's work: never ends (its worker dies first)


async def _done(ctx: EventContext) -> None:
    pass


async def test_entry_taken_but_never_started_runs_as_a_first_attempt_elsewhere(
    r: RedisClient, stream_settings: Settings, streams_config: StreamsConfig, names: StreamNames,
    publisher: Publisher,
) -> None:
    """A worker dies running one entry with a second one queued behind it: the next worker
    runs the queued one as attempt 1 (raw delivery 2) and the running one as attempt 2,
    reclaimed after a crash."""
    seen: dict[str, list[Seen]] = {}
    keys = names.keys("llm")
    running_id = await publisher.publish("llm", "e", {})
    queued_id = await publisher.publish("llm", "e", {})
    async with crashable(stream_settings, streams_config, recorder(seen, "a", _hang), "a") as crash:
        await wait_until(lambda: running_id in seen, timeout_s=DEADLINE_S)
        # Concurrency 1, bound 2: the second entry is held, queued, never started.
        await wait_until(lambda: pending_of(r, keys.stream, "llm", "a"), until=lambda n: n == 2,
                         timeout_s=DEADLINE_S)
        await wait_until(lambda: r.hget(keys.attempts, f"llm:{running_id}"),
                         until=lambda v: v == "1 0 0", timeout_s=DEADLINE_S,
                         message="the start was never recorded")
        await crash()
    async with running(r, streams_config, recorder(seen, "b", _done), name="b", grace_s=1.0):
        await wait_until(lambda: len(seen.get(queued_id, [])) == 1, timeout_s=DEADLINE_S)
        await wait_until(lambda: pending(r, names, "llm", "llm"), until=lambda n: n == 0, timeout_s=DEADLINE_S)
    assert seen[running_id] == [("a", 1, 1, False), ("b", 2, 2, True)]
    assert seen[queued_id] == [("b", 2, 1, False)]
    assert await r.hlen(keys.attempts) == 0 and await r.hlen(keys.errors) == 0
    assert await r.xlen(keys.dead) == 0


async def test_handler_failing_every_attempt_dead_letters_with_the_handler_failed_reason(
    r: RedisClient, streams_config: StreamsConfig, names: StreamNames, publisher: Publisher
) -> None:
    seen: dict[str, list[Seen]] = {}

    async def fail(ctx: EventContext) -> None:
        raise ValueError(f"cannot digest #{ctx.attempts}")

    spec = recorder(seen, "a", fail)
    spec = GroupSpec(spec.stream, spec.group, spec.handler, max_deliveries=3, retry_base_s=0.02)
    entry_id = await publisher.publish("llm", "poison", {})
    async with running(r, streams_config, spec, name="a", grace_s=1.0):
        await wait_until(lambda: dead_letters(r, names, "llm"), timeout_s=DEADLINE_S)
    [dead] = await dead_letters(r, names, "llm")
    assert seen[entry_id] == [("a", 1, 1, False), ("a", 2, 2, False), ("a", 3, 3, False)]
    assert dead["dead_id"] == entry_id
    assert dead["dead_reason"] == "handler failed 3 times: ValueError: cannot digest #3"
    assert dead["dead_last_error"] == "ValueError: cannot digest #3"
    assert (dead["dead_attempts"], dead["dead_deliveries"]) == ("3", "3")
    keys = names.keys("llm")
    assert await r.hlen(keys.attempts) == 0 and await r.hlen(keys.errors) == 0


async def test_worker_killed_mid_handler_past_max_deliveries_dead_letters_as_a_crash(
    r: RedisClient, stream_settings: Settings, streams_config: StreamsConfig, names: StreamNames,
    publisher: Publisher,
) -> None:
    """Each attempt's worker dies mid-way: the next attempt knows it was reclaimed after a
    crash, and past ``max_deliveries`` (2) the reason says the worker stopped mid-way."""
    seen: dict[str, list[Seen]] = {}
    keys = names.keys("llm")
    entry_id = await publisher.publish("llm", "heavy", {})
    field = f"llm:{entry_id}"
    for attempt, consumer in enumerate(["a", "b"], start=1):
        spec = recorder(seen, consumer, _hang)
        async with crashable(stream_settings, streams_config, spec, consumer) as crash:
            recorded = f"{attempt} 0 0"

            def is_recorded(value: object, recorded: str = recorded) -> bool:
                return value == recorded

            await wait_until(lambda: r.hget(keys.attempts, field), until=is_recorded,
                             timeout_s=DEADLINE_S,
                             message=f"attempt {attempt} was never recorded")
            await crash()
    async with running(r, streams_config, recorder(seen, "c", _done), name="c", grace_s=1.0):
        await wait_until(lambda: dead_letters(r, names, "llm"), timeout_s=DEADLINE_S)
        await wait_until(lambda: pending(r, names, "llm", "llm"), until=lambda n: n == 0, timeout_s=DEADLINE_S)
    assert seen[entry_id] == [("a", 1, 1, False), ("b", 2, 2, True)]
    [dead] = await dead_letters(r, names, "llm")
    assert dead["dead_reason"] == "worker stopped mid-way in 2 attempts (reclaimed after a crash)"
    assert (dead["dead_attempts"], dead["dead_deliveries"], dead["dead_last_error"]) == (
        "2", "3", "")
    assert await r.hlen(keys.attempts) == 0


async def test_entry_delivered_past_the_raw_cap_without_starts_is_dead_lettered(
    r: RedisClient, streams_config: StreamsConfig, names: StreamNames, publisher: Publisher
) -> None:
    """Deliveries without a recorded start are not attempts, up to 3 x max_deliveries."""
    keys = names.keys("llm")
    seen: dict[str, list[Seen]] = {}
    await r.xgroup_create(keys.stream, "llm", id="0", mkstream=True)
    at_cap = await publisher.publish("llm", "e", {})
    past_cap = await publisher.publish("llm", "e", {})
    await r.xreadgroup("llm", "ghost", {keys.stream: ">"}, count=2)
    # Taken 5 and 6 times by workers that died before starting them (max_deliveries 2: cap 6);
    # the reclaim below counts one more.
    await r.xclaim(keys.stream, "llm", "ghost", 0, [at_cap], idle=60_000, retrycount=5)
    await r.xclaim(keys.stream, "llm", "ghost", 0, [past_cap], idle=60_000, retrycount=6)
    async with running(r, streams_config, recorder(seen, "a", _done), name="a", grace_s=1.0):
        await wait_until(lambda: dead_letters(r, names, "llm"), timeout_s=DEADLINE_S)
        await wait_until(lambda: pending(r, names, "llm", "llm"), until=lambda n: n == 0, timeout_s=DEADLINE_S)
    assert seen == {at_cap: [("a", 6, 1, False)]}
    [dead] = await dead_letters(r, names, "llm")
    assert dead["dead_id"] == past_cap
    assert dead["dead_reason"] == (
        "delivered 7 times without a recorded start (the worker died before starting it)")
    assert (dead["dead_attempts"], dead["dead_deliveries"]) == ("0", "7")


async def test_start_markers_leave_nothing_behind_once_acked_deferred_or_dead_lettered(
    r: RedisClient, streams_config: StreamsConfig, names: StreamNames, publisher: Publisher
) -> None:
    keys = names.keys("llm")
    outcomes: list[str] = []

    async def handle(ctx: EventContext) -> None:
        # Long enough for the acker to write the start marker first.
        await wait_until(lambda: r.hexists(keys.attempts, f"llm:{ctx.entry_id}"),
                         timeout_s=DEADLINE_S)
        outcomes.append(ctx.type)
        if ctx.type == "defer" and ctx.attempt == 0:
            ctx.defer(0.01)
        if ctx.type == "fail":
            raise RuntimeError("no")

    spec = GroupSpec("llm", "llm", handle, concurrency=4, max_deliveries=2, retry_base_s=0.02)
    for kind in ("ok", "defer", "fail"):
        await publisher.publish("llm", kind, {})
    async with running(r, streams_config, spec, name="a", grace_s=1.0):
        await wait_until(lambda: sorted(outcomes) == ["defer", "defer", "fail", "fail", "ok"],
                         timeout_s=DEADLINE_S)
        await wait_until(lambda: pending(r, names, "llm", "llm"), until=lambda n: n == 0, timeout_s=DEADLINE_S)
    assert await r.hlen(keys.attempts) == 0 and await r.hlen(keys.errors) == 0
    assert [d["type"] for d in await dead_letters(r, names, "llm")] == ["fail"]


async def test_reader_and_reclaim_together_never_hold_more_than_concurrency_plus_prefetch(
    r: RedisClient, streams_config: StreamsConfig, names: StreamNames, publisher: Publisher
) -> None:
    """Stranded entries of a dead consumer (taken by the reclaim) and new entries (taken by
    the reader, blocked meanwhile) arrive at once: the consumer holds concurrency + prefetch,
    not twice that."""
    concurrency, prefetch, keys = 2, 3, names.keys("llm")
    bound = concurrency + prefetch
    await r.xgroup_create(keys.stream, "llm", id="0", mkstream=True)
    stranded = await publisher.publish_many("llm", [Envelope("e", {}) for _ in range(3 * bound)])
    await r.xreadgroup("llm", "dead", {keys.stream: ">"}, count=len(stranded))
    started: list[str] = []
    release = asyncio.Event()

    async def handle(ctx: EventContext) -> None:
        started.append(ctx.entry_id)
        await release.wait()  # the handler's work: until the test has counted

    spec = GroupSpec("llm", "llm", handle, concurrency=concurrency, prefetch=prefetch,
                     lease_s=LEASE_S)
    peak = 0
    async with running(r, streams_config, spec, name="c1", grace_s=1.0) as runtime:
        delivery = runtime.groups[0].delivery

        async def sample() -> None:
            nonlocal peak
            while True:
                peak = max(peak, delivery.held_count())
                await asyncio.sleep(0.001)

        sampler = asyncio.create_task(sample())
        reclaimed = runtime.metrics.reclaimed.labels("llm", "llm")
        # The reclaim takes stranded entries once they are idle past the lease, while the
        # reader blocks waiting for new ones; then new ones arrive.
        await wait_until(lambda: reclaimed._value.get() > 0, timeout_s=DEADLINE_S)
        new = await publisher.publish_many("llm", [Envelope("e", {}) for _ in range(3 * bound)])

        async def taken_by_c1() -> int:
            [group] = await r.xinfo_groups(keys.stream)
            return len(new) - int(group["lag"]) + int(reclaimed._value.get())

        total = await wait_until(taken_by_c1, until=lambda n: n >= bound, timeout_s=DEADLINE_S)
        assert total == bound
        assert delivery.held_count() == bound
        peak = max(peak, delivery.held_count())  # the sampler may not have woken meanwhile
        assert await pending_of(r, keys.stream, "llm", "c1") == bound
        release.set()
        await wait_until(lambda: len(started) == len(stranded) + len(new), timeout_s=DEADLINE_S)
        await wait_until(lambda: pending(r, names, "llm", "llm"), until=lambda n: n == 0, timeout_s=DEADLINE_S)
        sampler.cancel()
    assert sorted(started) == sorted(stranded + new)
    assert peak == bound


async def test_failed_entries_are_retried_even_when_the_waiting_cap_stops_the_intake(
    r: RedisClient, streams_config: StreamsConfig, names: StreamNames, publisher: Publisher
) -> None:
    """Concurrency 1 allows 16 entries waiting for a retry; 20 entries failing once fill
    that: the intake stops, yet the retries go on (before new entries) and every entry
    succeeds."""
    runs: dict[str, list[int]] = {}

    async def handle(ctx: EventContext) -> None:
        runs.setdefault(ctx.entry_id, []).append(ctx.attempts)
        if ctx.attempts == 1:
            raise RuntimeError("first try fails")

    spec = GroupSpec("llm", "llm", handle, concurrency=1, retry_base_s=2.0)
    ids = await publisher.publish_many("llm", [Envelope("e", {}) for _ in range(20)])
    async with running(r, streams_config, spec, name="a", grace_s=1.0) as runtime:
        delivery = runtime.groups[0].delivery
        # Those in hand when the cap is reached may fail into it too.
        await wait_until(lambda: delivery.capacity.waiting_count() >= 16, timeout_s=DEADLINE_S,
                         message="the waiting cap was never reached")
        await wait_until(lambda: all(runs.get(i) == [1, 2] for i in ids), timeout_s=DEADLINE_S)
        await wait_until(lambda: pending(r, names, "llm", "llm"), until=lambda n: n == 0, timeout_s=DEADLINE_S)
    assert await r.xlen(names.keys("llm").dead) == 0


async def test_stranded_entries_are_reclaimed_while_new_entries_keep_the_reader_busy(
    r: RedisClient, streams_config: StreamsConfig, names: StreamNames, publisher: Publisher
) -> None:
    """A steady flow keeps the reader reading all the room it can; the entries of a dead
    consumer still get room (the reclaim is owed it before new entries). Liveness only:
    without the owed room they mostly got room freed while a read blocked, just later."""
    keys = names.keys("llm")
    await r.xgroup_create(keys.stream, "llm", id="0", mkstream=True)
    stranded = await publisher.publish_many("llm", [Envelope("e", {}) for _ in range(4)])
    await r.xreadgroup("llm", "dead", {keys.stream: ">"}, count=len(stranded))
    handled: list[str] = []

    async def handle(ctx: EventContext) -> None:
        await asyncio.sleep(0.01)  # the handler's work
        handled.append(ctx.entry_id)

    async def flow() -> None:
        while True:
            await publisher.publish("llm", "e", {})
            await asyncio.sleep(0.02)  # the test's steady load: one entry every 20 ms

    spec = GroupSpec("llm", "llm", handle, concurrency=1, lease_s=LEASE_S)
    async with running(r, streams_config, spec, name="c1", grace_s=1.0):
        load = asyncio.create_task(flow())
        try:
            await wait_until(lambda: set(stranded) <= set(handled), timeout_s=10 * LEASE_S,
                             message="the stranded entries were never reclaimed")
            assert len(handled) > len(stranded)  # new entries flowed meanwhile
        finally:
            load.cancel()


async def test_entries_read_ahead_keep_their_lease_while_they_wait(
    r: RedisClient, streams_config: StreamsConfig, names: StreamNames, publisher: Publisher
) -> None:
    """A consumer running one long handler holds three more entries read ahead (concurrency
    1, prefetch 3): their leases are renewed while they wait, so another consumer's reclaim
    does not take them however long the first handler runs; each runs once, there."""
    keys, lease_s = names.keys("llm"), 2 * LEASE_S
    release = asyncio.Event()
    seen: list[tuple[str, str]] = []

    def spec_for(consumer: str) -> GroupSpec:
        async def handle(ctx: EventContext) -> None:
            seen.append((consumer, ctx.entry_id))
            await release.wait()  # the first handler's work: until the test has waited

        # A longer lease than the other tests': a loaded machine may starve the renewer
        # for a while, which is not what this test is about.
        return GroupSpec("llm", "llm", handle, concurrency=1, prefetch=3, lease_s=lease_s)

    ids = await publisher.publish_many("llm", [Envelope("e", {}) for _ in range(4)])
    async with running(r, streams_config, spec_for("a"), name="a", grace_s=1.0):
        await wait_until(lambda: pending_of(r, keys.stream, "llm", "a"), until=lambda n: n == 4,
                         timeout_s=DEADLINE_S, message="a did not read ahead")
        async with running(r, streams_config, spec_for("b"), name="b", grace_s=1.0):
            # Redis's clock, two leases on: b's reclaim (every lease / 4) ran many times.
            seconds, _ = await r.time()
            await wait_until(r.time, until=lambda t: int(t[0]) >= int(seconds) + 2 * lease_s + 1,
                             timeout_s=DEADLINE_S)
            assert await pending_of(r, keys.stream, "llm", "a") == 4
            assert seen == [("a", ids[0])]
            release.set()
            await wait_until(lambda: pending(r, names, "llm", "llm"), until=lambda n: n == 0,
                             timeout_s=DEADLINE_S)
    assert sorted(seen) == sorted(("a", eid) for eid in ids)
