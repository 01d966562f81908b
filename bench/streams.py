"""Throughput and latency of the streams runtime against a raw redis-py loop, same run.

    .venv/bin/python bench/streams.py [--events 30000]

Starts a private redis-server. Throughput: N no-op events through
publish -> consume -> ack, once with a raw loop (pipelined XADD, XREADGROUP
COUNT 100, one multi-id XACK) and once with Publisher + ConsumerRuntime (one
process, one group); prints both and the ratio (target >= 0.7). Latency:
publish -> handler start at a steady 1,000 events/s, p50 and p99.
Each throughput figure is the best of ``--rounds`` alternating runs.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from prometheus_client import CollectorRegistry

from config import Settings
from devstack.servers import RedisServer
from gateway.wiring import publisher_for, streams_config
from storage.redis_client import RedisClient, open_redis
from streams.delivery import READ_BATCH
from streams.envelope import Envelope
from streams.names import StreamNames
from streams.runtime import ConsumerRuntime
from streams.spec import EventContext, GroupSpec

TARGET_RATIO = 0.7
BATCH = 1000


async def raw_loop(r: RedisClient, n: int) -> float:
    stream, group = "bench:{raw}", "g"
    await r.delete(stream)
    await r.xgroup_create(stream, group, id="0", mkstream=True)
    started = time.perf_counter()
    for start in range(0, n, BATCH):
        async with r.pipeline(transaction=False) as pipe:
            for _ in range(min(BATCH, n - start)):
                pipe.xadd(stream, Envelope("noop", {}).fields())
            await pipe.execute()
    done = 0
    while done < n:
        reply = await r.xreadgroup(group, "c", {stream: ">"}, count=100, block=2000)
        ids = [eid for _, messages in reply for eid, _ in messages]
        if ids:
            await r.xack(stream, group, *ids)
            done += len(ids)
    return n / (time.perf_counter() - started)


async def runtime_loop(r: RedisClient, settings: Settings, n: int) -> float:
    names = StreamNames(settings.redis_key_prefix)
    await r.delete(names.stream("bench"))
    handled = 0
    all_done = asyncio.Event()

    async def handle(ctx: EventContext) -> None:
        nonlocal handled
        handled += 1
        if handled == n:
            all_done.set()

    publisher = publisher_for(r, settings)
    spec = GroupSpec("bench", "g", handle, concurrency=READ_BATCH // 2)
    runtime = ConsumerRuntime(r, streams_config(settings), CollectorRegistry(), [spec],
                              consumer_name="bench")
    await runtime.start()
    started = time.perf_counter()
    for start in range(0, n, BATCH):
        await publisher.publish_many(
            "bench", [Envelope("noop", {}) for _ in range(min(BATCH, n - start))]
        )
    await all_done.wait()
    # Acks are part of the work: wait until the group has nothing pending.
    while (await r.xpending(names.stream("bench"), "g"))["pending"]:
        await asyncio.sleep(0.001)
    rate = n / (time.perf_counter() - started)
    await runtime.stop(5)
    return rate


async def latency(r: RedisClient, settings: Settings, rate: int, seconds: float) -> list[float]:
    names = StreamNames(settings.redis_key_prefix)
    await r.delete(names.stream("lat"))
    samples: list[float] = []

    async def handle(ctx: EventContext) -> None:
        samples.append(time.time() - ctx.payload["t"])

    publisher = publisher_for(r, settings)
    runtime = ConsumerRuntime(r, streams_config(settings), CollectorRegistry(),
                              [GroupSpec("lat", "g", handle)], consumer_name="lat")
    await runtime.start()
    await asyncio.sleep(0.5)
    tick_s = 0.01
    per_tick = max(1, int(rate * tick_s))
    ticks = int(seconds / tick_s)
    t0 = time.monotonic()
    for i in range(ticks):
        for _ in range(per_tick):
            await publisher.publish("lat", "ping", {"t": time.time()})
        delay = t0 + (i + 1) * tick_s - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
    expected = ticks * per_tick
    deadline = time.monotonic() + 10
    while len(samples) < expected and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    await runtime.stop(5)
    return samples


async def main(events: int, rounds: int) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(Path(tmp))
        await server.start()
        try:
            settings = Settings.from_env({"REDIS_URL": server.url})
            async with open_redis(settings) as r:
                await raw_loop(r, 2000)  # warm up
                # Alternate the two and keep each one's best run: the machine may be shared.
                raws, ourss = [], []
                for _ in range(rounds):
                    raws.append(await raw_loop(r, events))
                    ourss.append(await runtime_loop(r, settings, events))
                raw, ours = max(raws), max(ourss)
                ratio = ours / raw
                print(f"raw redis-py loop : {raw:10.0f} events/s")
                print(f"streams runtime   : {ours:10.0f} events/s")
                print(f"ratio             : {ratio:10.2f}  (target >= {TARGET_RATIO})"
                      + ("" if ratio >= TARGET_RATIO else "  TARGET MISSED"))
                samples = sorted(await latency(r, settings, 1000, 5.0))
                if samples:
                    p50 = statistics.median(samples) * 1000
                    p99 = samples[int(len(samples) * 0.99) - 1] * 1000
                    print(f"latency @1000/s   : p50 {p50:.2f} ms, p99 {p99:.2f} ms "
                          f"({len(samples)} events)")
        finally:
            await asyncio.to_thread(server.stop)
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    try:
        import uvloop
    except ImportError:
        sys.exit(asyncio.run(main(args.events, args.rounds)))
    sys.exit(uvloop.run(main(args.events, args.rounds)))
