"""The application's consumer groups: the registry of group names and ``consumers_ctx``
running groups inside an aiohttp app (``gateway.groups``, ``gateway.consumers``)."""

from __future__ import annotations

import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry
from streams_support import DEADLINE_S
from waiting import wait_until

from config import Settings
from gateway.appkeys import CONSUMERS, METRICS_REGISTRY, REDIS, SETTINGS
from gateway.consumers import consumers_ctx
from gateway.groups import SpecFactory, UnknownGroupError, resolve
from storage.redis_client import RedisClient
from streams.publisher import Publisher
from streams.spec import EventContext, GroupSpec


async def test_consumers_ctx_runs_groups_inside_an_aiohttp_app(
    r: RedisClient, stream_settings: Settings, publisher: Publisher
) -> None:
    seen: list[str] = []

    async def handle(ctx: EventContext) -> None:
        seen.append(ctx.type)

    app = web.Application()
    app[SETTINGS] = stream_settings
    app[REDIS] = r
    app[METRICS_REGISTRY] = CollectorRegistry()
    app.cleanup_ctx.append(consumers_ctx([lambda _app: GroupSpec("llm", "llm", handle)],
                                         concurrency=2))
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        assert app[CONSUMERS].groups[0].concurrency == 2
        await publisher.publish("llm", "hello", {})
        await wait_until(lambda: seen == ["hello"], timeout_s=DEADLINE_S)
    finally:
        await runner.cleanup()


def test_registry_rejects_unknown_group_names() -> None:
    factories: dict[str, SpecFactory] = {"llm": lambda app: GroupSpec("llm", "llm", _noop)}
    assert resolve(["llm"], factories) == [factories["llm"]]
    assert resolve([], factories) == [factories["llm"]]
    with pytest.raises(UnknownGroupError, match="unknown group"):
        resolve(["nope"], factories)


async def _noop(ctx: EventContext) -> None:
    pass
