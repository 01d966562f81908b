"""The timed loops of bench/streams.py: each figure's consume and publish runs, ours beside
the raw redis-py loop (and FastStream's subscriber) it is measured against, on one stream.

Each returns a :class:`Run` (events/s, this process's CPU time per event).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry

from config import Settings
from gateway.wiring import streams_config
from storage.redis_client import RedisClient
from streams.envelope import Envelope
from streams.names import StreamNames
from streams.publisher import Publisher
from streams.runtime import ConsumerRuntime
from streams.spec import EventContext, GroupSpec

#: A 200-byte JSON payload: ``{"pad":"xxx..."}``.
PAYLOAD = {"pad": "x" * 190}
PREFILL_BATCH = 1000
PUBLISHERS = 100


@dataclass
class Run:
    rate: float  # events/s
    cpu_us: float  # this process's CPU time per event


async def _timed(n: int, body: Callable[[], Awaitable[None]]) -> Run:
    cpu0, t0 = time.process_time(), time.perf_counter()
    await body()
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    return Run(n / wall, cpu / n * 1e6)


async def _timed_on_new(
    r: RedisClient, key: str, n: int, body: Callable[[], Awaitable[None]]
) -> Run:
    """:func:`_timed` with the stream ``key`` deleted before and after ``body``."""
    await r.delete(key)
    run = await _timed(n, body)
    await r.delete(key)
    return run


async def prefill(r: RedisClient, key: str, n: int) -> None:
    await r.delete(key)
    for start in range(0, n, PREFILL_BATCH):
        async with r.pipeline(transaction=False) as pipe:
            for _ in range(min(PREFILL_BATCH, n - start)):
                pipe.xadd(key, Envelope("noop", PAYLOAD).fields())  # type: ignore[arg-type]
            await pipe.execute()


# --- consume


async def consume_raw(r: RedisClient, names: StreamNames, n: int) -> Run:
    key, group = names.stream("bench-raw"), "g"
    await prefill(r, key, n)
    await r.xgroup_create(key, group, id="0")

    async def body() -> None:
        done = 0
        while done < n:
            reply = await r.xreadgroup(group, "c", {key: ">"}, count=100, block=2000)
            ids = [eid for _, messages in reply for eid, _ in messages]
            if ids:
                await r.xack(key, group, *ids)
                done += len(ids)

    run = await _timed(n, body)
    await r.delete(key)
    return run


async def _until_settled(r: RedisClient, key: str, group: str, done: asyncio.Event) -> None:
    await asyncio.wait_for(done.wait(), 120)
    # Acks are part of the work: until the group has nothing pending.
    while (await r.xpending(key, group))["pending"]:
        await asyncio.sleep(0.002)


async def consume_runtime(r: RedisClient, settings: Settings, n: int) -> Run:
    names = StreamNames(settings.redis_key_prefix)
    key = names.stream("bench-rt")
    await prefill(r, key, n)
    handled = 0
    all_done = asyncio.Event()

    async def handle(ctx: EventContext) -> None:
        nonlocal handled
        handled += 1
        if handled == n:
            all_done.set()

    runtime = ConsumerRuntime(r, streams_config(settings), CollectorRegistry(),
                              [GroupSpec("bench-rt", "g", handle)], consumer_name="bench")

    async def body() -> None:
        await runtime.start()
        await _until_settled(r, key, "g", all_done)

    run = await _timed(n, body)
    await runtime.stop(5)
    await r.delete(key)
    return run


async def consume_faststream(r: RedisClient, settings: Settings, n: int) -> Run | None:
    try:
        from faststream.redis import RedisBroker, StreamSub
    except ImportError:
        return None
    key = StreamNames(settings.redis_key_prefix).stream("bench-fs")
    await prefill(r, key, n)
    # FastStream creates its group at "$" (new entries only): this one starts at the beginning.
    await r.xgroup_create(key, "g", id="0")
    handled = 0
    all_done = asyncio.Event()
    broker = RedisBroker(settings.redis_url, logger=None)

    @broker.subscriber(stream=StreamSub(key, group="g", consumer="c"))  # type: ignore[misc]
    async def handle(body: Any) -> None:
        nonlocal handled
        handled += 1
        if handled == n:
            all_done.set()

    async def body() -> None:
        await broker.start()
        await _until_settled(r, key, "g", all_done)

    run = await _timed(n, body)
    await broker.stop()
    await r.delete(key)
    return run


# --- publish


async def publish_bare_awaited(r: RedisClient, names: StreamNames, n: int) -> Run:
    key = names.stream("bench-pub")
    fields = Envelope("noop", PAYLOAD).fields()

    async def body() -> None:
        for _ in range(n):
            await r.xadd(key, fields)  # type: ignore[arg-type]

    return await _timed_on_new(r, key, n, body)


async def publish_awaited(r: RedisClient, publisher: Publisher, names: StreamNames,
                          n: int) -> Run:
    async def body() -> None:
        for _ in range(n):
            await publisher.publish("bench-pub", "noop", PAYLOAD)

    return await _timed_on_new(r, names.stream("bench-pub"), n, body)


async def publish_raw_pipelined(r: RedisClient, names: StreamNames, n: int) -> Run:
    key = names.stream("bench-pub")

    async def body() -> None:
        for start in range(0, n, PUBLISHERS):
            async with r.pipeline(transaction=False) as pipe:
                for _ in range(min(PUBLISHERS, n - start)):
                    pipe.xadd(key, Envelope("noop", PAYLOAD).fields())  # type: ignore[arg-type]
                await pipe.execute()

    return await _timed_on_new(r, key, n, body)


async def publish_concurrent(r: RedisClient, publisher: Publisher, names: StreamNames,
                             n: int) -> Run:
    async def one_publisher(count: int) -> None:
        for _ in range(count):
            await publisher.publish("bench-pub", "noop", PAYLOAD)

    async def body() -> None:
        await asyncio.gather(*(one_publisher(n // PUBLISHERS) for _ in range(PUBLISHERS)))

    return await _timed_on_new(r, names.stream("bench-pub"), n // PUBLISHERS * PUBLISHERS, body)
