"""A test-only worker process: runs one group whose handler records its effects in Redis.

Run as ``python -m tests.streams_worker_proc`` with settings in the environment
(REDIS_URL, STREAM_LEASE_S, ...). The handler of stream ``test`` / group ``g``:

* counts every start in hash ``<prefix>:{test}:starts`` (field = event id),
  and appends ``<pid> <event id> <deliveries> <attempts> <reclaimed_after_crash 0/1>``
  to list ``<prefix>:{test}:log``;
* sleeps ``payload["sleep_s"]`` (default 0), plus ``first_sleep_s`` on the first delivery;
* applies its effect exactly once: HINCRBY ``<prefix>:{test}:effects`` <event id> 1,
  together with the done marker ``<prefix>:{test}:done:g:<idempotency key>`` in one
  MULTI (:func:`apply_once`).
"""

from __future__ import annotations

import argparse
import asyncio
import os
from collections.abc import Callable
from typing import Any

from redis.exceptions import WatchError

from config import Settings
from gateway.consumers import run_consumers
from storage.redis_client import RedisClient, open_redis
from streams.spec import EventContext, GroupSpec

STREAM = "test"
GROUP = "g"

#: Longer than any redelivery window of the tests.
MARKER_TTL_S = 7 * 24 * 3600


async def apply_once(
    redis: RedisClient, marker: str, effect: Callable[[Any], None], *, ttl_s: int = MARKER_TTL_S
) -> bool:
    """Run ``effect(pipe)`` (queues commands) and set ``marker`` in one MULTI, unless set already.

    True if applied now, False if applied before. Optimistic: WATCH on the marker,
    retried when a concurrent duplicate (a reclaimed entry still running in its
    old worker) got there first.
    """
    while True:
        async with redis.pipeline(transaction=True) as pipe:
            try:
                await pipe.watch(marker)
                if await pipe.exists(marker):
                    return False
                pipe.multi()  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated
                effect(pipe)
                pipe.set(marker, "1", ex=ttl_s)
                await pipe.execute()
                return True
            except WatchError:
                continue


def make_spec(redis: RedisClient, prefix: str, concurrency: int) -> GroupSpec:
    base = f"{prefix}:{{{STREAM}}}"

    async def handle(ctx: EventContext) -> None:
        event_id = ctx.envelope.id
        async with redis.pipeline(transaction=False) as pipe:
            pipe.hincrby(f"{base}:starts", event_id, 1)
            pipe.rpush(f"{base}:log", f"{os.getpid()} {event_id} {ctx.deliveries} "
                                      f"{ctx.attempts} {int(ctx.reclaimed_after_crash)}")
            await pipe.execute()
        sleep_s = float(ctx.payload.get("sleep_s", 0))
        if ctx.deliveries == 1:
            sleep_s += float(ctx.payload.get("first_sleep_s", 0))
        if sleep_s:
            await asyncio.sleep(sleep_s)  # the handler's work (a kill can land in the middle)

        def effect(pipe: Any) -> None:
            pipe.hincrby(f"{base}:effects", event_id, 1)

        await apply_once(redis, f"{base}:done:{ctx.group}:{ctx.idempotency_key}", effect)

    return GroupSpec(stream=STREAM, group=GROUP, handler=handle, concurrency=concurrency,
                     retry_base_s=0.1)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    settings = Settings.from_env()
    async with open_redis(settings) as redis:
        spec = make_spec(redis, settings.redis_key_prefix, args.concurrency)
        await run_consumers(settings, [spec])


if __name__ == "__main__":
    asyncio.run(main())
