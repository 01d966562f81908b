"""The cluster-wide permit limiter on a real Redis: bound, FIFO, leases, pause."""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from waiting import wait_until

from config import Settings
from llm.metrics import LlmMetrics
from storage.permits import ClusterLimiter, LimiterConfig, LimiterKeys, PermitUnavailable
from storage.redis_client import RedisClient, RedisTimeouts, open_redis


@pytest.fixture
def keys() -> LimiterKeys:
    """Each test's own limiter keys: permits, waiters or a pause left by another test (or
    by an app's jobs) must not reach it."""
    return LimiterKeys.for_prefix(f"test-{uuid.uuid4().hex[:8]}")


def make_limiter(
    redis: RedisClient, keys: LimiterKeys, *, limit: int, lease_s: float | None = None
) -> ClusterLimiter:
    """A limiter of ``limit`` permits on ``keys``; the default lease unless ``lease_s``."""
    config = LimiterConfig(limit=limit)
    if lease_s is not None:
        config = dataclasses.replace(config, lease_s=lease_s)
    return ClusterLimiter(redis, keys, config, LlmMetrics(CollectorRegistry()), model="m")


async def _until_counted(redis: RedisClient, key: str, n: int, what: str) -> None:
    await wait_until(lambda: redis.zcard(key), until=lambda count: int(count) == n,
                     timeout_s=20, interval_s=0.02, message=f"never {n} {what}")


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
            await asyncio.sleep(0.02)  # the call's work: holders overlap, others queue
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
    await _until_counted(redis, keys.holders, 1, "holders")
    waiters = []
    for n in range(6):
        waiters.append(asyncio.create_task(waiter(n)))
        await _until_counted(redis, keys.queue, n + 1, "waiters")  # queued in this order
    release.set()
    await asyncio.gather(first, *waiters)
    assert order == [0, 1, 2, 3, 4, 5]


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
        await _until_counted(redis, keys.queue, 1, "waiters")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert (await limiter.state())["waiters"] == 0


def _swallowing_a_cancel(call: Any, ready: asyncio.Event | None = None) -> Any:
    """``call`` (a script of the limiter), but its first run loses a cancellation, as redis-py
    does on Python 3.11: it writes each command through ``asyncio.wait_for``, which returns
    normally when the cancel lands in the loop round the write finished (CPython gh-86296)."""
    swallowed = False

    async def run(**kwargs: Any) -> Any:
        nonlocal swallowed
        if not swallowed:
            swallowed = True
            if ready is not None:
                ready.set()
            try:
                await asyncio.Event().wait()  # cancelled here...
            except asyncio.CancelledError:
                pass  # ...and it goes on as if nothing happened
        return await call(**kwargs)

    return run


async def test_a_waiter_whose_cancellation_redis_py_swallowed_still_leaves_the_queue(
    redis: RedisClient, keys: LimiterKeys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Why the README test run once hung here: the cancelled waiter polled on for ever."""
    limiter = make_limiter(redis, keys, limit=1)

    async def wait_for_one() -> None:
        async with limiter.permit():
            pytest.fail("granted while the only permit is held")

    async with limiter.permit():
        polling = asyncio.Event()
        monkeypatch.setattr(limiter, "_acquire", _swallowing_a_cancel(limiter._acquire, polling))
        task = asyncio.create_task(wait_for_one())
        await polling.wait()
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=10)
        assert done, "the cancelled waiter is still polling"
        assert task.cancelled()
        assert (await limiter.state())["waiters"] == 0


async def test_a_lease_renewer_whose_cancellation_was_swallowed_still_ends(
    redis: RedisClient, keys: LimiterKeys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Else leaving ``permit()`` waits for the renewer, which renews for ever."""
    limiter = make_limiter(redis, keys, limit=1, lease_s=0.3)
    renewing = asyncio.Event()
    monkeypatch.setattr(limiter, "_renew", _swallowing_a_cancel(limiter._renew, renewing))
    async with asyncio.timeout(10):
        async with limiter.permit() as permit:
            await renewing.wait()
    assert not permit.lost.is_set()
    assert (await limiter.state())["permits_in_use"] == 0


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
