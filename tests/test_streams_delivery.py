"""Delivery of one group's entries against a real Redis: handler, ack, retry, defer, dead
letters, and leases a long handler keeps (``streams.delivery``)."""

from __future__ import annotations

import asyncio
import json

from streams_support import DEADLINE_S, read_stream, running, wait_all_acked
from waiting import wait_until

from storage.redis_client import RedisClient
from streams.config import StreamsConfig
from streams.names import StreamNames
from streams.publisher import Publisher
from streams.spec import Defer, EventContext, GroupSpec


async def test_published_event_reaches_its_handler_typed_and_is_acked(
    r: RedisClient, streams_config: StreamsConfig, names: StreamNames, publisher: Publisher
) -> None:
    seen: list[EventContext] = []

    async def handle(ctx: EventContext) -> None:
        seen.append(ctx)

    spec = GroupSpec("uploads", "confirm", handle, event_types={"up": lambda p: (p["n"], p["s"])})
    entry_id = await publisher.publish("uploads", "up", {"n": 3, "s": "x"},
                                       idempotency_key="idem-1", request_id="req-9")
    async with running(r, streams_config, spec):
        await wait_until(lambda: bool(seen), timeout_s=DEADLINE_S)
        await wait_all_acked(r, names, "uploads", "confirm")
    ctx = seen[0]
    assert (ctx.entry_id, ctx.payload, ctx.idempotency_key, ctx.deliveries) == (
        entry_id, (3, "x"), "idem-1", 1)
    assert ctx.envelope.request_id == "req-9"
    raw = (await read_stream(r, names.stream("uploads")))[0][1]
    assert raw["type"] == "up" and json.loads(raw["payload"]) == {"n": 3, "s": "x"}


async def test_unknown_type_and_bad_payload_go_to_dead_letters_while_others_flow(
    r: RedisClient, streams_config: StreamsConfig, names: StreamNames, publisher: Publisher
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
    async with running(r, streams_config, spec):
        await wait_until(lambda: r.xlen(names.keys("llm").dead), until=lambda n: n == 3,
                         timeout_s=DEADLINE_S)
        await wait_until(lambda: len(handled) == 5, timeout_s=DEADLINE_S)
        await wait_all_acked(r, names, "llm", "llm")
    dead = {f["dead_id"]: f for _, f in await read_stream(r, names.keys("llm").dead)}
    reasons = sorted(f["dead_reason"] for f in dead.values())
    assert reasons[0].startswith("bad envelope: missing field")
    assert reasons[1].startswith("bad payload for 'job'")
    assert reasons[2] == "unknown event type 'nonsense'"
    unknown = next(f for f in dead.values() if f.get("type") == "nonsense")
    assert unknown["dead_stream"] == names.stream("llm") and unknown["dead_deliveries"] == "1"
    assert sorted(handled) == [0, 1, 2, 3, 4]


async def test_failing_handler_is_retried_with_growing_delivery_count_until_it_succeeds(
    r: RedisClient, streams_config: StreamsConfig, names: StreamNames, publisher: Publisher
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
    async with running(r, streams_config, spec) as rt:
        await wait_until(lambda: deliveries == [1, 2, 3] and len(others) == 20,
                         timeout_s=DEADLINE_S)
        await wait_all_acked(r, names, "llm", "llm")
        assert rt.metrics.retried.labels("llm", "llm")._value.get() == 2
    assert await r.hlen(names.keys("llm").errors) == 0
    assert await r.xlen(names.keys("llm").dead) == 0


async def test_poison_event_lands_in_dead_letters_after_max_deliveries_while_others_flow(
    r: RedisClient, streams_config: StreamsConfig, names: StreamNames, publisher: Publisher
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
    async with running(r, streams_config, spec):
        await wait_until(lambda: r.xlen(names.keys("transcription").dead), until=lambda n: n == 1,
                         timeout_s=DEADLINE_S)
        await wait_all_acked(r, names, "transcription", "transcription")
    assert poison_runs == [1, 2, 3, 4, 5]
    assert sorted(others) == list(range(50))
    [(_, dead)] = await read_stream(r, names.keys("transcription").dead)
    assert dead["dead_stream"] == names.stream("transcription")
    assert dead["dead_id"] == poison_id
    assert dead["dead_deliveries"] == "5"
    assert dead["type"] == "poison"
    assert dead["dead_reason"] == "handler failed 5 times: ValueError: cannot digest"
    assert dead["dead_last_error"] == "ValueError: cannot digest"
    assert dead["dead_attempts"] == "5"
    assert int(dead["dead_ms"]) > 0


def test_defer_carries_its_delay_and_payload_update() -> None:
    exc = Defer(2.5, {"a": 1})
    assert (exc.delay_s, exc.payload_update) == (2.5, {"a": 1})


async def test_deferred_event_runs_again_later_without_counting_as_a_failure(
    r: RedisClient, streams_config: StreamsConfig, names: StreamNames, publisher: Publisher
) -> None:
    runs: list[tuple[int, int, int]] = []

    async def handle(ctx: EventContext) -> None:
        runs.append((ctx.attempt, ctx.deliveries, ctx.payload.get("checks", 0)))
        if ctx.attempt < 3:
            ctx.defer(0.05, {"checks": ctx.payload.get("checks", 0) + 1})

    spec = GroupSpec("uploads", "upload-confirmation", handle, max_deliveries=1)
    await publisher.publish("uploads", "verify", {}, idempotency_key="k")
    async with running(r, streams_config, spec) as rt:
        await wait_until(lambda: len(runs) == 4, timeout_s=DEADLINE_S)
        await wait_all_acked(r, names, "uploads", "upload-confirmation")
        assert rt.metrics.deferred.labels("uploads", "upload-confirmation")._value.get() == 3
    assert runs == [(0, 1, 0), (1, 1, 1), (2, 1, 2), (3, 1, 3)]
    assert await r.zcard(names.keys("uploads").delayed) == 0
    assert await r.xlen(names.keys("uploads").dead) == 0


async def test_handler_running_three_leases_runs_once_while_another_consumer_watches(
    r: RedisClient, streams_config: StreamsConfig, names: StreamNames, publisher: Publisher
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
    async with running(r, streams_config, spec_for("a"), name="a"):
        await wait_until(lambda: starts == ["a"], timeout_s=DEADLINE_S)
        async with running(r, streams_config, spec_for("b"), name="b"):
            await wait_until(lambda: done == ["a"], timeout_s=DEADLINE_S)
            await wait_all_acked(r, names, "llm", "llm")
            # Nothing to wait on: a wrong reclaim would show up within a lease.
            await asyncio.sleep(lease_s)
    assert starts == ["a"]
