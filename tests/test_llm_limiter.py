"""The cluster-wide permit limiter on a real Redis: bound, FIFO, leases, pause."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
from prometheus_client import CollectorRegistry

from config import Settings
from llm.keys import LimiterKeys
from llm.limiter import ClusterLimiter, LimiterConfig, PermitUnavailable
from llm.metrics import LlmMetrics
from storage.redis_client import RedisClient, RedisTimeouts, open_redis


@pytest.fixture
def keys() -> LimiterKeys:
    """Each test's own limiter keys: permits, waiters or a pause left by another test (or
    by an app's jobs) must not reach it."""
    return LimiterKeys.for_prefix(f"test-{uuid.uuid4().hex[:8]}")


def make_limiter(redis: RedisClient, keys: LimiterKeys, **config: float) -> ClusterLimiter:
    return ClusterLimiter(
        redis,
        keys,
        LimiterConfig(**config),  # type: ignore[arg-type]
        LlmMetrics(CollectorRegistry()),
        model="m",
    )


async def wait_until(predicate, timeout_s: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not await predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def test_never_more_holders_than_the_limit_across_limiters(
    redis: RedisClient, keys: LimiterKeys
) -> None:
    """Three limiters (as three processes would) sharing one Redis hold at most 2 permits."""
    limiters = [make_limiter(redis, keys, limit=2) for _ in range(3)]
    holding = 0
    peak = 0

    async def call(limiter: ClusterLimiter) -> None:
        nonlocal holding, peak
        async with limiter.permit():
            holding += 1
            peak = max(peak, holding)
            await asyncio.sleep(0.02)
            holding -= 1

    await asyncio.gather(*(call(limiters[i % 3]) for i in range(24)))
    assert peak == 2
    assert await limiters[0].state() == {"permits_in_use": 0, "waiters": 0, "pause_left_s": 0.0}


async def test_waiters_are_served_first_come_first_served(
    redis: RedisClient, keys: LimiterKeys
) -> None:
    limiter_a, limiter_b = make_limiter(redis, keys, limit=1), make_limiter(redis, keys, limit=1)
    order: list[int] = []
    release = asyncio.Event()

    async def holder() -> None:
        async with limiter_a.permit():
            await release.wait()

    async def waiter(n: int) -> None:
        async with (limiter_a if n % 2 else limiter_b).permit():
            order.append(n)

    first = asyncio.create_task(holder())
    await wait_until(lambda: _holders(redis, keys, 1))
    waiters = []
    for n in range(6):
        waiters.append(asyncio.create_task(waiter(n)))
        await wait_until(lambda n=n: _waiters(redis, keys, n + 1))  # type: ignore[misc]
    release.set()
    await asyncio.gather(first, *waiters)
    assert order == [0, 1, 2, 3, 4, 5]


async def _holders(redis: RedisClient, keys: LimiterKeys, n: int) -> bool:
    return int(await redis.zcard(keys.holders)) == n


async def _waiters(redis: RedisClient, keys: LimiterKeys, n: int) -> bool:
    return int(await redis.zcard(keys.queue)) == n


async def test_a_cancelled_holder_gives_its_permit_back(
    redis: RedisClient, keys: LimiterKeys
) -> None:
    limiter = make_limiter(redis, keys, limit=1)
    entered = asyncio.Event()

    async def hold_forever() -> None:
        async with limiter.permit():
            entered.set()
            await asyncio.Event().wait()

    task = asyncio.create_task(hold_forever())
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert (await limiter.state())["permits_in_use"] == 0


async def test_a_cancelled_waiter_leaves_the_queue(redis: RedisClient, keys: LimiterKeys) -> None:
    limiter = make_limiter(redis, keys, limit=1)
    async def wait_for_one() -> None:
        async with limiter.permit():
            pytest.fail("granted while the only permit is held")

    async with limiter.permit():
        task = asyncio.create_task(wait_for_one())
        await wait_until(lambda: _waiters(redis, keys, 1))
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert (await limiter.state())["waiters"] == 0


async def test_a_dead_waiter_does_not_block_the_queue(
    redis: RedisClient, keys: LimiterKeys
) -> None:
    """A waiter that stops polling (its process died) drops out after its heartbeat TTL."""
    # A waiter ahead of us whose heartbeat has already expired, as if its process died.
    await redis.zadd(keys.queue, {"dead-process:waiter": 0})
    await redis.zadd(keys.heartbeats, {"dead-process:waiter": 1})
    limiter = make_limiter(redis, keys, limit=1)
    async with asyncio.timeout(20):
        async with limiter.permit():
            pass
    assert await redis.zscore(keys.queue, "dead-process:waiter") is None


async def test_an_expired_lease_is_reclaimed(redis: RedisClient, keys: LimiterKeys) -> None:
    """A crashed holder's permit (lease never renewed) is free once its lease expires."""
    seconds, micros = await redis.time()
    now_ms = int(seconds) * 1000 + int(micros) // 1000
    await redis.zadd(keys.holders, {"crashed:holder": now_ms + 300})
    limiter = make_limiter(redis, keys, limit=1)
    async with asyncio.timeout(20):
        async with limiter.permit():
            assert await redis.zscore(keys.holders, "crashed:holder") is None
            seconds, micros = await redis.time()
            assert int(seconds) * 1000 + int(micros) // 1000 >= now_ms + 300


async def test_a_long_call_keeps_its_lease_by_renewing(
    redis: RedisClient, keys: LimiterKeys
) -> None:
    limiter = make_limiter(redis, keys, limit=1, lease_s=1.5)
    other = make_limiter(redis, keys, limit=1, lease_s=1.5)
    async with limiter.permit() as permit:
        await asyncio.sleep(2.5)  # longer than one lease: renewals keep it
        assert not permit.lost.is_set()
        with pytest.raises(PermitUnavailable):
            async with other.permit(deadline=time.monotonic() + 0.3):
                pass


async def test_no_permit_is_granted_during_a_pause(redis: RedisClient, keys: LimiterKeys) -> None:
    limiter = make_limiter(redis, keys, limit=3)
    left_s = await limiter.pause_for(1.0)
    assert 0.9 <= left_s <= 1.0
    # A shorter pause does not shorten the longer one.
    assert await limiter.pause_for(0.1) >= 0.8
    with pytest.raises(PermitUnavailable):
        async with limiter.permit(deadline=time.monotonic() + 0.4):
            pass
    async with asyncio.timeout(20):
        async with limiter.permit():
            seconds, _ = await redis.time()
            assert (await limiter.state())["pause_left_s"] == 0


async def test_without_redis_callers_wait_rather_than_run_unbounded(
    redis_server: object, settings: Settings, keys: LimiterKeys
) -> None:
    """No per-process fallback: with Redis unreachable no permit is ever granted."""
    unreachable = settings.replace(redis_url="redis://127.0.0.1:1/0")
    async with open_redis(unreachable, RedisTimeouts(connect_s=0.1, retries=0)) as dead_redis:
        limiter = make_limiter(dead_redis, keys, limit=3)
        with pytest.raises(PermitUnavailable):
            async with limiter.permit(deadline=time.monotonic() + 1.0):
                pytest.fail("a permit was granted without Redis")
