"""The sliding-window limiter: exact, shared through Redis, refusals cost nothing."""

from __future__ import annotations

import asyncio
from typing import cast

from prometheus_client import CollectorRegistry
from waiting import wait_until

from config import Settings
from storage.ratelimit import RateLimitMetrics, SlidingWindowLimiter
from storage.redis_autopipeline import open_autopipeline
from storage.redis_client import RedisClient


async def test_grants_exactly_the_limit_then_refuses_with_retry_after(redis: RedisClient) -> None:
    limiter = SlidingWindowLimiter(redis, name="t", limit=40, window_s=60)
    decisions = [await limiter.hit("conv") for _ in range(41)]
    assert [d.allowed for d in decisions] == [True] * 40 + [False]
    assert [d.remaining for d in decisions[:3]] == [39, 38, 37]
    refused = decisions[-1]
    assert refused.remaining == 0
    assert 59 < refused.retry_after_s <= 60
    assert refused.retry_after_header == 60
    headers = refused.headers()
    assert headers["Retry-After"] == "60"
    assert headers["RateLimit-Policy"] == '"t";q=40;w=60'
    assert headers["RateLimit"] == '"t";r=0;t=60'


async def test_keys_are_independent(redis: RedisClient) -> None:
    limiter = SlidingWindowLimiter(redis, name="t", limit=1, window_s=60)
    assert (await limiter.hit("a")).allowed
    assert not (await limiter.hit("a")).allowed
    assert (await limiter.hit("b")).allowed


async def test_refused_attempts_do_not_consume_quota(redis: RedisClient) -> None:
    limiter = SlidingWindowLimiter(redis, name="t", limit=2, window_s=1)
    assert (await limiter.hit("k")).allowed and (await limiter.hit("k")).allowed
    for _ in range(20):
        assert not (await limiter.hit("k")).allowed
    assert await redis.zcard(limiter.key("k")) == 2
    # once the window has passed (by Redis's clock, as the limiter counts), the full quota
    # is back despite all the refusals
    newest = cast(list[tuple[str, float]], await redis.zrange(limiter.key("k"), -1, -1, withscores=True))
    newest_us = newest[0][1]

    async def window_passed() -> bool:
        seconds, micros = await redis.time()
        return int(seconds) * 1_000_000 + int(micros) > newest_us + 1_000_000

    await wait_until(window_passed, timeout_s=10, interval_s=0.1, message="the window never passed")
    assert (await limiter.hit("k")).allowed
    assert (await limiter.hit("k")).allowed


async def test_concurrent_hits_from_many_clients_grant_exactly_the_limit(redis: RedisClient) -> None:
    limiter = SlidingWindowLimiter(redis, name="t", limit=40, window_s=60)
    decisions = await asyncio.gather(*(limiter.hit("c") for _ in range(200)))
    assert sum(d.allowed for d in decisions) == 40


async def test_state_survives_a_new_limiter_object(redis: RedisClient) -> None:
    """A restarted gateway builds a new limiter; the log in Redis is what counts."""
    first = SlidingWindowLimiter(redis, name="t", limit=3, window_s=60)
    for _ in range(3):
        await first.hit("c")
    second = SlidingWindowLimiter(redis, name="t", limit=3, window_s=60)
    assert not (await second.hit("c")).allowed


async def test_key_has_its_own_hash_tag_and_expires(redis: RedisClient) -> None:
    limiter = SlidingWindowLimiter(redis, name="upload-url", limit=3, window_s=60, key_prefix="echo")
    await limiter.hit("abc")
    assert limiter.key("abc") == "echo:{rl:upload-url:abc}"
    assert 0 < await redis.pttl(limiter.key("abc")) <= 61_000


async def test_metrics_count_grants_and_refusals(redis: RedisClient) -> None:
    registry = CollectorRegistry()
    limiter = SlidingWindowLimiter(redis, name="t", limit=1, window_s=60, metrics=RateLimitMetrics(registry))
    await limiter.hit("x")
    await limiter.hit("x")
    await limiter.hit("x")
    sample = registry.get_sample_value
    assert sample("echo_ratelimit_decisions_total", {"limiter": "t", "outcome": "granted"}) == 1
    assert sample("echo_ratelimit_decisions_total", {"limiter": "t", "outcome": "refused"}) == 2


async def test_concurrent_checks_in_one_auto_pipelined_write_grant_exactly_the_limit(
    settings: Settings, redis: RedisClient
) -> None:
    async with open_autopipeline(settings, redis) as pipeline:
        assert pipeline is not None
        limiter = SlidingWindowLimiter(redis, name="t", limit=40, window_s=60, autopipeline=pipeline)
        decisions = await asyncio.gather(*(limiter.hit("burst") for _ in range(100)))
        assert pipeline.stats.writes <= 3
    assert sum(d.allowed for d in decisions) == 40
    assert sorted(d.remaining for d in decisions if d.allowed) == list(range(40))
    assert all(d.retry_after_header >= 59 for d in decisions if not d.allowed)
