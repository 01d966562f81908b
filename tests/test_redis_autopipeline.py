"""The auto-pipelined connection: one write per loop round, replies to the right callers,
and the pooled client's failure contract (fast errors, recovery on its own)."""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError
from waiting import wait_until

from config import Settings
from devstack.servers import RedisServer
from storage.redis_autopipeline import AutoPipeline, open_autopipeline
from storage.redis_client import RedisClient, RedisTimeouts, open_redis
from storage.redis_connection import Endpoint


async def _written(pipeline: AutoPipeline, *args: object) -> asyncio.Future[Any]:
    """``pipeline.execute(*args)``, once it is written on the connection (its reply pending)."""
    before = pipeline.stats.commands
    command: asyncio.Future[Any] = asyncio.ensure_future(pipeline.execute(*args))
    await wait_until(lambda: pipeline.stats.commands > before, interval_s=0.001,
                     message=f"{args[0]} was not written")
    return command


@pytest.fixture
async def pipeline(settings: Settings, redis: RedisClient) -> AsyncIterator[AutoPipeline]:
    async with open_autopipeline(settings, redis) as opened:
        assert opened is not None
        yield opened


async def test_concurrent_commands_share_writes_and_each_caller_gets_its_own_reply(
    pipeline: AutoPipeline,
) -> None:
    replies = await asyncio.gather(*(pipeline.execute("ECHO", f"caller-{n}") for n in range(500)))
    assert replies == [f"caller-{n}" for n in range(500)]
    assert pipeline.stats.commands >= 500
    assert pipeline.stats.writes <= 5  # 500 commands issued in one round: a handful of writes


async def test_commands_keep_their_order_on_the_connection(pipeline: AutoPipeline) -> None:
    key = "autopipeline:order"
    await pipeline.execute("DEL", key)
    await asyncio.gather(*(pipeline.execute("RPUSH", key, n) for n in range(200)))
    assert await pipeline.execute("LRANGE", key, 0, -1) == [str(n) for n in range(200)]


async def _between_two_echoes(pipeline: AutoPipeline, *command: object) -> object:
    """``command``'s outcome (result or exception), sent in one write between two ECHOs
    whose replies must still reach their own callers."""
    outcomes: tuple[object, object, object] = await asyncio.gather(
        pipeline.execute("ECHO", "before"),
        pipeline.execute(*command),
        pipeline.execute("ECHO", "after"),
        return_exceptions=True,
    )
    before, outcome, after = outcomes
    assert (before, after) == ("before", "after")
    return outcome


async def test_an_error_reply_goes_to_its_caller_only(pipeline: AutoPipeline) -> None:
    await pipeline.execute("SET", "autopipeline:text", "not a number")
    outcome = await _between_two_echoes(pipeline, "INCR", "autopipeline:text")
    assert isinstance(outcome, ResponseError)


async def test_a_script_unknown_to_the_server_is_loaded_and_run_once(
    pipeline: AutoPipeline, redis: RedisClient
) -> None:
    script = redis.register_script("return redis.call('INCR', KEYS[1])")
    await redis.delete("autopipeline:runs")
    await redis.script_flush()
    assert await pipeline.run_script(script, ["autopipeline:runs"], []) == 1
    assert await pipeline.run_script(script, ["autopipeline:runs"], []) == 2


async def test_a_caller_cancelled_before_the_write_sends_nothing(pipeline: AutoPipeline) -> None:
    await pipeline.execute("DEL", "autopipeline:cancelled")
    cancelled = pipeline.execute("SET", "autopipeline:cancelled", "sent")
    cancelled.cancel()
    assert await pipeline.execute("EXISTS", "autopipeline:cancelled") == 0


async def test_a_caller_cancelled_after_the_write_leaves_the_replies_in_step(
    pipeline: AutoPipeline,
) -> None:
    waiting = await _written(pipeline, "BLPOP", "autopipeline:never", 0.3)
    waiting.cancel()
    assert await pipeline.execute("ECHO", "next") == "next"


async def _started(server: RedisServer) -> RedisServer:
    await server.start()
    return server


async def test_a_redis_restart_fails_pending_commands_fast_then_recovers(
    tmp_path: Path,
) -> None:
    server = await _started(RedisServer(tmp_path / "redis"))
    try:
        settings = Settings.from_env({"REDIS_URL": server.url})
        async with open_redis(settings) as pooled, open_autopipeline(settings, pooled) as pipeline:
            assert pipeline is not None
            assert await pipeline.execute("SET", "k", "v") is not None

            in_flight = await _written(pipeline, "BLPOP", "never", 5)
            server.kill()
            with pytest.raises(RedisConnectionError):
                await asyncio.wait_for(in_flight, 2)  # answered, not left waiting

            started = time.monotonic()
            with pytest.raises(RedisConnectionError):
                await pipeline.execute("PING")
            assert time.monotonic() - started < 3.0  # connect timeout and a few back-offs

            await server.start()  # same port
            assert await pipeline.execute("PING") == "PONG"
            assert pipeline.stats.connects == 2
    finally:
        server.kill()


async def test_a_reply_later_than_the_socket_timeout_drops_the_connection(
    settings: Settings, redis: RedisClient
) -> None:
    timeouts = RedisTimeouts(socket_s=0.4)
    endpoint = Endpoint.from_settings(settings, redis)
    assert endpoint is not None
    pipeline = AutoPipeline(endpoint, timeouts)
    try:
        assert await pipeline.execute("PING") == "PONG"
        # The server answers nobody for a second.
        await redis.execute_command("CLIENT", "PAUSE", 1000, "ALL")
        started = time.monotonic()
        with pytest.raises(RedisTimeoutError):
            await pipeline.execute("PING")
        assert time.monotonic() - started < 1.0
        assert pipeline.stats.reply_timeouts == 1
        assert await redis.ping()  # answered once the server's pause is over
        assert await pipeline.execute("PING") == "PONG"  # a new connection
    finally:
        await pipeline.aclose()


async def test_password_and_database_from_the_url_are_used(tmp_path: Path) -> None:
    server = await _started(RedisServer(tmp_path / "redis", extra_args=("--requirepass", "s3cret")))
    try:
        url = f"redis://:s3cret@127.0.0.1:{server.port}/3"
        settings = Settings.from_env({"REDIS_URL": url})
        async with open_redis(settings) as pooled, open_autopipeline(settings, pooled) as pipeline:
            assert pipeline is not None
            await pipeline.execute("SET", "in-db-3", "yes")
            assert await pooled.get("in-db-3") == "yes"  # the pool uses db 3 as well
            assert await pipeline.execute("CLIENT", "GETNAME") == "echo-gateway"

        loop_errors: list[dict[str, object]] = []
        asyncio.get_running_loop().set_exception_handler(lambda _, context: loop_errors.append(context))
        wrong = Settings.from_env({"REDIS_URL": f"redis://:wrong@127.0.0.1:{server.port}/2"})
        async with open_redis(wrong) as pooled, open_autopipeline(wrong, pooled) as pipeline:
            assert pipeline is not None
            with pytest.raises(RedisConnectionError, match="(?i)set-up|WRONGPASS|invalid"):
                await pipeline.execute("PING")
        gc.collect()  # an unread failed future reports itself when collected
        assert loop_errors == []
    finally:
        server.kill()


async def test_closing_fails_what_is_pending_and_refuses_new_commands(
    pipeline: AutoPipeline,
) -> None:
    pending = await _written(pipeline, "BLPOP", "autopipeline:never", 5)
    await pipeline.aclose()
    with pytest.raises(RedisConnectionError):
        await pending
    with pytest.raises(RedisConnectionError):
        pipeline.execute("PING")


async def test_it_is_off_when_the_setting_says_so(settings: Settings, redis: RedisClient) -> None:
    off = settings.replace(redis_autopipeline=False)
    async with open_autopipeline(off, redis) as pipeline:
        assert pipeline is None


async def test_a_reply_that_is_not_utf8_fails_its_caller_only(pipeline: AutoPipeline) -> None:
    await pipeline.execute("SET", "autopipeline:binary", b"\xff\xfe")
    outcome = await _between_two_echoes(pipeline, "GET", "autopipeline:binary")
    assert isinstance(outcome, UnicodeDecodeError)
    assert pipeline.stats.connections_lost == 0


async def test_beyond_the_pending_bound_commands_fail_at_once(
    settings: Settings, redis: RedisClient
) -> None:
    endpoint = Endpoint.from_settings(settings, redis)
    assert endpoint is not None
    pipeline = AutoPipeline(endpoint, max_pending=10)
    try:
        accepted = [pipeline.execute("ECHO", n) for n in range(10)]
        with pytest.raises(RedisConnectionError, match="not keeping up"):
            pipeline.execute("ECHO", "one too many")
        assert await asyncio.gather(*accepted) == [str(n) for n in range(10)]
        assert pipeline.stats.refused == 1
        assert await pipeline.execute("ECHO", "room again") == "room again"
    finally:
        await pipeline.aclose()
