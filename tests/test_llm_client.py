"""The bounded client against the Messages API emulator: one retry loop, hints, pause, metrics."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from emulators.anthropic import AnthropicEmulator
from prometheus_client import CollectorRegistry

from config import Settings
from llm.client import BoundedLlm, LlmCallFailed, RetryPolicy
from llm.metrics import LlmMetrics
from llm.providers import AnthropicProvider, LlmRequest
from llm.retry import retry_hint_s, should_retry
from storage.permits import ClusterLimiter, LimiterConfig, LimiterKeys
from storage.redis_client import RedisClient

REQUEST = LlmRequest(system="be brief", prompt="hello", max_tokens=64)


@pytest.fixture
async def emulator() -> AsyncIterator[AnthropicEmulator]:
    async with AnthropicEmulator(responder=lambda body: "hi there") as emu:
        yield emu


def make_llm(
    redis: RedisClient, emulator: AnthropicEmulator, registry: CollectorRegistry, **policy: float
) -> BoundedLlm:
    metrics = LlmMetrics(registry)
    provider = AnthropicProvider.create(
        api_key=emulator.api_key, model="claude-test", base_url=emulator.base_url
    )
    limiter = ClusterLimiter(
        # Own keys: a pause or a permit left by another test must not reach this one.
        redis, LimiterKeys.for_prefix(f"test-{uuid.uuid4().hex[:8]}"), LimiterConfig(limit=3), metrics,
        model="claude-test",
    )
    defaults = {"backoff_base_s": 0.05, "backoff_cap_s": 0.2, "deadline_s": 30.0}
    return BoundedLlm(provider, limiter, metrics, RetryPolicy(**{**defaults, **policy}))


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


async def test_a_call_returns_the_text_and_counts_tokens(
    redis: RedisClient, emulator: AnthropicEmulator
) -> None:
    registry = CollectorRegistry()
    llm = make_llm(redis, emulator, registry)
    try:
        completion = await llm.complete(REQUEST)
    finally:
        await llm.close()
    assert completion.text == "hi there"
    assert completion.provider == "anthropic"
    assert completion.input_tokens > 0 and completion.output_tokens > 0
    assert sample(registry, "echo_llm_tokens_total", model="claude-test", direction="input") > 0
    assert sample(registry, "echo_llm_call_seconds_count", model="claude-test", outcome="ok") == 1
    assert sample(registry, "echo_llm_permit_wait_seconds_count", model="claude-test") == 1


async def test_sdk_retries_are_off_and_ours_retry_529_then_succeed(
    redis: RedisClient, emulator: AnthropicEmulator
) -> None:
    emulator.fail_next(529, count=2)
    registry = CollectorRegistry()
    llm = make_llm(redis, emulator, registry)
    try:
        completion = await llm.complete(REQUEST)
    finally:
        await llm.close()
    assert completion.text == "hi there"
    assert [r.status for r in emulator.requests] == [529, 529, 200]
    assert sample(registry, "echo_llm_overloaded_total", model="claude-test") == 2
    assert sample(registry, "echo_llm_retries_total", model="claude-test", reason="overloaded") == 2
    assert sample(registry, "echo_llm_pause_seconds_total") > 0


async def test_a_429_pauses_every_caller_for_its_retry_after(
    redis: RedisClient, emulator: AnthropicEmulator
) -> None:
    emulator.fail_next(429, retry_after_s=1)
    registry = CollectorRegistry()
    llm = make_llm(redis, emulator, registry)
    try:
        await llm.complete(REQUEST)
    finally:
        await llm.close()
    first, second = emulator.requests
    assert first.status == 429 and second.status == 200
    assert first.finished is not None and second.arrived - first.finished >= 0.99
    assert sample(registry, "echo_llm_rate_limited_total", model="claude-test") == 1
    assert sample(registry, "echo_llm_pause_seconds_total") == 1.0


async def test_a_client_error_is_not_retried(redis: RedisClient, emulator: AnthropicEmulator) -> None:
    emulator.fail_next(400)
    llm = make_llm(redis, emulator, CollectorRegistry())
    try:
        with pytest.raises(LlmCallFailed) as failure:
            await llm.complete(REQUEST)
    finally:
        await llm.close()
    assert failure.value.status == 400
    assert len(emulator.requests) == 1


async def test_the_overall_deadline_ends_the_retries(
    redis: RedisClient, emulator: AnthropicEmulator
) -> None:
    emulator.fail_next(503, count=1000)
    # Long enough for several attempts on a loaded machine (back-off 0.05-0.2 s each).
    llm = make_llm(redis, emulator, CollectorRegistry(), deadline_s=3.0)
    try:
        with pytest.raises(LlmCallFailed, match="gave up"):
            await llm.complete(REQUEST)
    finally:
        await llm.close()
    assert 1 < len(emulator.requests) < 1000


async def test_connection_errors_are_retried_until_the_deadline(redis: RedisClient) -> None:
    registry = CollectorRegistry()
    metrics = LlmMetrics(registry)
    provider = AnthropicProvider.create(api_key="k", model="m", base_url="http://127.0.0.1:1")
    limiter = ClusterLimiter(
        redis, LimiterKeys.for_prefix(f"test-{uuid.uuid4().hex[:8]}"), LimiterConfig(), metrics
    )
    llm = BoundedLlm(provider, limiter, metrics, RetryPolicy(deadline_s=0.8, backoff_base_s=0.05))
    try:
        with pytest.raises(LlmCallFailed) as failure:
            await llm.complete(REQUEST)
    finally:
        await llm.close()
    assert failure.value.kind == "connection_error"
    assert sample(registry, "echo_llm_retries_total", model="m", reason="connection_error") >= 1
    assert (await limiter.state())["permits_in_use"] == 0


def test_the_latest_retry_hint_wins() -> None:
    now = datetime(2025, 1, 1, tzinfo=UTC)
    reset = (now + timedelta(seconds=7)).isoformat().replace("+00:00", "Z")
    headers = {
        "retry-after-ms": "1500",
        "retry-after": "3",
        "anthropic-ratelimit-tokens-reset": reset,
    }
    assert retry_hint_s(headers, now=now) == 7
    assert retry_hint_s(headers, rate_limited=False, now=now) == 3
    assert retry_hint_s({"retry-after-ms": "250"}, now=now) == 0.25
    http_date = "Wed, 01 Jan 2025 00:00:05 GMT"
    assert retry_hint_s({"retry-after": http_date}, now=now) == 5
    assert retry_hint_s({"retry-after": "soon"}, now=now) is None
    assert retry_hint_s({}, now=now) is None


def test_x_should_retry_overrides_the_status() -> None:
    assert should_retry(429, {})
    assert should_retry(529, {})
    assert should_retry(None, {})  # timeout or connection error
    assert not should_retry(400, {})
    assert not should_retry(429, {"x-should-retry": "false"})
    assert should_retry(409, {"x-should-retry": "true"})


async def test_the_offline_provider_is_bounded_and_labelled(
    redis: RedisClient, settings: Settings
) -> None:
    from llm.lifecycle import open_llm
    from llm.providers import SummaryTask

    registry = CollectorRegistry()
    async with open_llm(settings, redis, registry) as service:
        assert service.llm.offline
        completion = await service.llm.complete(
            LlmRequest(
                system="s", prompt="p", max_tokens=100,
                task=SummaryTask("One. Two sentences here. Three!", max_sentences=5),
            )
        )
    assert completion.provider == "offline"
    assert completion.model == "offline-extractive"
    assert completion.text == "One. Two sentences here. Three!"
    assert sample(registry, "echo_llm_call_seconds_count", model="offline-extractive", outcome="ok") == 1
    assert sample(registry, "echo_llm_permit_wait_seconds_count", model="offline-extractive") == 1
