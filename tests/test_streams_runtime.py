"""The consumer runtime against a real Redis: stopping mid-work, a lost group, its metrics,
and a Redis outage (``streams.runtime``, ``streams.loops``)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from streams_support import DEADLINE_S, running, wait_all_acked
from structlog.testing import capture_logs
from waiting import wait_until

from config import Settings
from devstack.servers import RedisServer
from storage.redis_client import RedisClient, open_redis
from streams.config import StreamsConfig
from streams.envelope import Envelope
from streams.metrics import StreamMetrics, observe_all
from streams.names import StreamNames
from streams.publisher import Publisher
from streams.redis_types import REDIS_UNAVAILABLE_ERRORS
from streams.runtime import ConsumerRuntime
from streams.spec import EventContext, GroupSpec


async def test_stop_mid_work_loses_nothing(
    r: RedisClient, streams_config: StreamsConfig, names: StreamNames, publisher: Publisher
) -> None:
    finished: dict[str, int] = {}

    async def handle(ctx: EventContext) -> None:
        await asyncio.sleep(ctx.payload["sleep_s"])  # the handler's work, cut off by stop
        finished[ctx.envelope.id] = finished.get(ctx.envelope.id, 0) + 1

    spec = GroupSpec("llm", "llm", handle, concurrency=2, lease_s=1.0)
    ids = [(await publisher.publish_many("llm", [Envelope("job", {"sleep_s": 0.5})]))[0]
           for _ in range(10)]
    first = ConsumerRuntime(r, streams_config, CollectorRegistry(), [spec], consumer_name="a")
    await first.start()
    await wait_until(lambda: len(finished) >= 1, timeout_s=DEADLINE_S)
    await first.stop(grace_s=0.1)  # some handlers are cut off, the rest never started
    async with running(r, streams_config, spec, name="b"):
        await wait_until(lambda: len(finished) == 10, timeout_s=DEADLINE_S)
        await wait_all_acked(r, names, "llm", "llm")
    assert len(ids) == 10


async def test_runtime_recreates_a_deleted_group(
    r: RedisClient, streams_config: StreamsConfig, names: StreamNames, publisher: Publisher
) -> None:
    seen: list[int] = []

    async def handle(ctx: EventContext) -> None:
        seen.append(ctx.payload["n"])

    async with running(r, streams_config, GroupSpec("llm", "llm", handle)):
        await publisher.publish("llm", "e", {"n": 1})
        await wait_until(lambda: seen == [1], timeout_s=DEADLINE_S)
        await r.delete(names.stream("llm"))
        await publisher.publish("llm", "e", {"n": 2})  # a new stream without the group
        await wait_until(lambda: seen == [1, 2], timeout_s=DEADLINE_S)


async def test_metrics_count_what_the_runtime_did(
    r: RedisClient, streams_config: StreamsConfig, publisher: Publisher
) -> None:
    async def handle(ctx: EventContext) -> None:
        pass

    registry = CollectorRegistry()
    runtime = ConsumerRuntime(r, streams_config, registry, [GroupSpec("llm", "llm", handle)],
                              consumer_name="m")
    await publisher.publish_many("llm", [Envelope("e", {}) for _ in range(3)])
    await runtime.start()
    try:
        labels = {"stream": "llm", "group": "llm"}
        await wait_until(
            lambda: registry.get_sample_value("echo_stream_processed_total", labels) == 3,
            timeout_s=DEADLINE_S)
        assert registry.get_sample_value("echo_stream_delivery_count_count", labels) == 3
        assert registry.get_sample_value(
            "echo_stream_handler_duration_seconds_count", labels) == 3
    finally:
        await runtime.stop(1)



def test_durations_observed_per_burst_count_as_one_observe_each() -> None:
    """The runtime adds a burst's handler durations to the histogram at once: every bucket,
    the count and the sum as one ``observe`` per duration would leave them."""
    durations_s = [0.0, 0.0004, 0.001, 0.003, 0.001, 0.7, 60.0, 61.0, 400.0, 0.05]
    one_by_one, at_once = CollectorRegistry(), CollectorRegistry()
    for registry in (one_by_one, at_once):
        histogram = StreamMetrics(registry).handler_s.labels("llm", "llm")
        if registry is one_by_one:
            for duration_s in durations_s:
                histogram.observe(duration_s)
        else:
            observe_all(histogram, durations_s)

    def samples(registry: CollectorRegistry) -> dict[tuple[str, str], float]:
        return {(s.name, s.labels.get("le", "")): s.value for m in registry.collect()
                for s in m.samples if m.name == "echo_stream_handler_duration_seconds"
                and not s.name.endswith("_created")}

    assert samples(at_once) == pytest.approx(samples(one_by_one))
    assert samples(at_once)[("echo_stream_handler_duration_seconds_count", "")] == 10

@pytest.mark.slow
async def test_consumers_survive_a_redis_outage_and_recover_on_their_own(
    tmp_path: Path, stream_settings: Settings, streams_config: StreamsConfig
) -> None:
    server = RedisServer(tmp_path / "redis")
    await server.start()
    settings = stream_settings.replace(redis_url=server.url)
    seen: list[int] = []

    async def handle(ctx: EventContext) -> None:
        seen.append(ctx.payload["n"])

    try:
        async with open_redis(settings) as client:
            publisher = Publisher.from_config(client, streams_config)
            async with running(client, streams_config, GroupSpec("llm", "llm", handle)):
                await publisher.publish("llm", "e", {"n": 1})
                await wait_until(lambda: seen == [1], timeout_s=DEADLINE_S)
                with capture_logs() as logs:
                    server.kill()
                    await wait_until(
                        lambda: any(e["event"] == "stream_redis_unavailable" for e in logs),
                        timeout_s=DEADLINE_S, message="no consumer loop met the outage")
                await server.start()  # empty again: stream and group are gone
                await wait_until(lambda: publisher.publish("llm", "e", {"n": 2}),
                                 timeout_s=DEADLINE_S, retry_on=REDIS_UNAVAILABLE_ERRORS)
                await wait_until(lambda: 2 in seen, timeout_s=DEADLINE_S)
    finally:
        server.stop()
