"""Fixtures and helpers of the event-streams tests (a pytest plugin: tests/conftest.py loads it).

The fixtures give a Redis of the session's server, flushed, with a short lease
and grace, and no S3 (the streams core needs none). The ``read_*`` helpers turn
redis-py's stream replies, typed for every client mode (bytes or str, RESP2 or
RESP3), into what a decoding RESP2 client really returns, and fail on anything else.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from typing import TypeAlias

import pytest
from prometheus_client import CollectorRegistry
from waiting import wait_until

from config import Settings
from storage.redis_client import RedisClient, open_redis
from streams.config import StreamsConfig
from streams.names import StreamNames
from streams.publisher import Publisher
from streams.runtime import ConsumerRuntime
from streams.spec import EventContext, GroupSpec

#: Upper bound of every wait in the streams tests; a healthy run takes a fraction of it.
DEADLINE_S = 30.0

#: A stream entry as a decoding client returns it: (entry id, fields).
StreamEntry: TypeAlias = tuple[str, dict[str, str]]


@pytest.fixture
def stream_settings(base_env: dict[str, str]) -> Settings:
    return Settings.from_env({**base_env, "STREAM_LEASE_S": "2", "SHUTDOWN_GRACE_S": "2"})


@pytest.fixture
def streams_config(stream_settings: Settings) -> StreamsConfig:
    """The runtime's config: the settings' Redis prefix, short lease and grace."""
    return StreamsConfig(key_prefix=stream_settings.redis_key_prefix, lease_s=2,
                         shutdown_grace_s=2)


@pytest.fixture
async def r(stream_settings: Settings) -> AsyncIterator[RedisClient]:
    """The session's Redis, empty at the start of the test."""
    async with open_redis(stream_settings) as client:
        await client.flushdb()
        yield client


@pytest.fixture
def names(streams_config: StreamsConfig) -> StreamNames:
    return StreamNames(streams_config.key_prefix)


@pytest.fixture
def publisher(r: RedisClient, streams_config: StreamsConfig) -> Publisher:
    return Publisher.from_config(r, streams_config)


@asynccontextmanager
async def running(
    r: RedisClient, config: StreamsConfig, *specs: GroupSpec, name: str = "c1",
    grace_s: float = 2.0,
) -> AsyncIterator[ConsumerRuntime]:
    """A started consumer runtime named ``name`` running ``specs``, stopped on exit."""
    runtime = ConsumerRuntime(r, config, CollectorRegistry(), list(specs), consumer_name=name)
    await runtime.start()
    try:
        yield runtime
    finally:
        await runtime.stop(grace_s)


@asynccontextmanager
async def crashable(
    settings: Settings, streams_config: StreamsConfig, spec: GroupSpec, name: str
) -> AsyncIterator[Callable[[], Awaitable[None]]]:
    """A runtime on its own Redis client; yields ``crash()``, which stops every task of the
    runtime where it stands, as kill -9 would (nothing released, nothing flushed)."""
    async with open_redis(settings) as client:
        before = asyncio.all_tasks()
        runtime = ConsumerRuntime(
            client, streams_config, CollectorRegistry(), [spec], consumer_name=name
        )
        await runtime.start()
        tasks = asyncio.all_tasks() - before

        async def crash() -> None:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        try:
            yield crash
        finally:
            await crash()


async def pending(r: RedisClient, names: StreamNames, stream: str, group: str) -> int:
    """How many entries ``group`` has delivered and not acked."""
    return int((await r.xpending(names.stream(stream), group))["pending"])


async def wait_all_acked(r: RedisClient, names: StreamNames, stream: str, group: str) -> None:
    """Wait until ``group`` has acked every entry delivered to it."""
    await wait_until(lambda: pending(r, names, stream, group), until=lambda n: n == 0,
                     timeout_s=DEADLINE_S, message=f"{stream}/{group} still has pending entries")


def as_text(value: object) -> str:
    """A reply value of the decoding client, typed: fails on anything but a string."""
    assert isinstance(value, str), f"not a decoded reply: {value!r}"
    return value


def _entries(raw: Iterable[Sequence[object]]) -> list[StreamEntry]:
    decoded: list[StreamEntry] = []
    for entry_id, fields in raw:
        assert isinstance(fields, dict), f"entry {entry_id!r} has no fields: {fields!r}"
        decoded.append((as_text(entry_id), {as_text(k): as_text(v) for k, v in fields.items()}))
    return decoded


async def read_stream(r: RedisClient, key: str) -> list[StreamEntry]:
    """Every entry of the stream at ``key`` (XRANGE - +)."""
    reply = await r.xrange(key)
    assert reply is not None, f"no XRANGE reply for {key}"
    return _entries(reply)


async def read_group(
    r: RedisClient, group: str, consumer: str, key: str, *, count: int
) -> list[StreamEntry]:
    """Up to ``count`` new entries of the stream at ``key`` for ``consumer`` of ``group``
    (XREADGROUP >)."""
    reply = await r.xreadgroup(group, consumer, {key: ">"}, count=count)
    assert isinstance(reply, list), f"not a RESP2 XREADGROUP reply: {reply!r}"
    if not reply:
        return []
    [(stream, entries)] = reply
    assert stream == key, (stream, key)
    return _entries(entries)


async def make_dead_letters(
    r: RedisClient, config: StreamsConfig, publisher: Publisher, stream: str, n: int
) -> list[str]:
    """``n`` events of a type no group accepts, published to ``stream`` and dead-lettered at
    once by a group ``g`` (real runtime); their entry ids."""
    async def never(ctx: EventContext) -> None:
        raise AssertionError("an unknown type reached the handler")

    spec = GroupSpec(stream, "g", never, event_types={"known": dict})
    ids = [await publisher.publish(stream, "unknown", {"n": i}) for i in range(n)]
    dead_key = StreamNames(config.key_prefix).keys(stream).dead
    async with running(r, config, spec):
        await wait_until(lambda: r.xlen(dead_key), until=lambda k: k == n, timeout_s=DEADLINE_S,
                         message=f"{n} dead letters in {dead_key}")
    return ids
