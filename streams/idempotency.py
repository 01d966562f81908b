"""Apply a handler's effect at most once per idempotency key.

Redelivery is normal (a worker dies after its effect, before its ack), so a
handler records "done" atomically with its last state change. The marker key
lives under the hash tag of the handler's own state (``ctx.done_marker(tag)``)
so both fit in one MULTI even in Cluster.

Example::

    async def handle(ctx: EventContext) -> None:
        cid = ctx.payload["conversation_id"]
        marker = ctx.done_marker(f"c:{cid}")            # echo:{c:<cid>}:done:<group>:<idem>

        def effect(pipe):
            pipe.hset(f"echo:{{c:{cid}}}:chunks", ctx.payload["chunk"], "verified")

        applied = await apply_once(redis, marker, effect)   # False: done before, skipped

In a Lua script, take the marker as one of KEYS and start with
``if redis.call('SET', marker, '1', 'NX', 'EX', ttl) == false then return 0 end``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from redis.exceptions import WatchError

from storage.redis_client import RedisClient

#: Long enough to cover every redelivery (dead letters come after minutes).
DEFAULT_MARKER_TTL_S = 7 * 24 * 3600


async def is_done(redis: RedisClient, marker: str) -> bool:
    """Whether the effect behind ``marker`` was applied (a cheap early exit before slow work)."""
    return bool(await redis.exists(marker))


async def apply_once(
    redis: RedisClient,
    marker: str,
    effect: Callable[[Any], None],
    *,
    ttl_s: int = DEFAULT_MARKER_TTL_S,
) -> bool:
    """Run ``effect(pipe)`` (queues commands) and set ``marker`` in one MULTI, unless set already.

    Returns True if applied now, False if it had been applied before. Keys queued
    by ``effect`` must share ``marker``'s hash tag (Cluster). Optimistic: WATCH
    on the marker, retried if a concurrent duplicate got there first.
    """
    while True:
        async with redis.pipeline(transaction=True) as pipe:
            try:
                await pipe.watch(marker)
                if await pipe.exists(marker):
                    return False
                pipe.multi()
                effect(pipe)
                pipe.set(marker, "1", ex=ttl_s)
                await pipe.execute()
                return True
            except WatchError:
                continue
