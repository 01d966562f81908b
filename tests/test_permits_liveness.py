"""A dead process's permits and queue places are freed within seconds, not after the lease.

Real Redis, real processes killed with SIGKILL. The leases here are 60 s (the
transcription bound's) and a dead waiter's place would last 60 s by its TTL: every wait
below has a timeout of 15 s, so passing means the process's liveness record freed them.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import structlog
from prometheus_client import CollectorRegistry
from redis.exceptions import ConnectionError as RedisConnectionError
from waiting import wait_until

from config import Settings
from devstack.servers import RedisServer
from llm.lifecycle import open_llm
from storage.permits import ClusterLimiter, LimiterConfig, LimiterKeys, PermitUnavailable
from storage.redis_client import RedisClient, open_redis
from transcription.base import NoopTranscriber
from transcription.lifecycle import open_transcription
from transcription.metrics import TranscriptionMetrics

ROOT = Path(__file__).resolve().parent.parent
LEASE_S = 60.0
#: Far below the 60 s lease and the 60 s waiter TTL, far above the 5 s liveness.
FREED_WITHIN_S = 15.0

#: A process that takes (or queues for) the only permit of a bound with a 60 s lease and
#: then blocks; it prints its process id, then "holding <holder id>" once it holds.
HOLDER = """
import asyncio, sys
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis
from storage.permits import ClusterLimiter, LimiterConfig, LimiterKeys
from transcription.metrics import TranscriptionMetrics

async def main(url: str, prefix: str) -> None:
    redis = Redis.from_url(url, decode_responses=True)
    keys = LimiterKeys.for_prefix(prefix, tag="transcription")
    config = LimiterConfig(limit=1, lease_s=60, waiter_ttl_s=60)
    metrics = TranscriptionMetrics(CollectorRegistry())
    async with ClusterLimiter(redis, keys, config, metrics) as limiter:
        print("process", limiter.process_id, flush=True)
        async with limiter.permit() as permit:
            print("holding", permit.holder_id, flush=True)
            await asyncio.Event().wait()

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


@pytest.fixture
def redis_settings(base_env: dict[str, str]) -> Settings:
    """Settings of the session's Redis (no S3 needed here)."""
    return Settings.from_env(base_env)


@pytest.fixture
async def redis(redis_settings: Settings) -> AsyncIterator[RedisClient]:
    async with open_redis(redis_settings) as client:
        yield client


@pytest.fixture
def keys() -> LimiterKeys:
    """Each test's own bound, so nothing another test left behind reaches it."""
    return LimiterKeys.for_prefix(f"test-{uuid.uuid4().hex[:8]}", tag="transcription")


class Holder:
    """The child process running :data:`HOLDER`."""

    def __init__(self, redis_server: RedisServer, keys: LimiterKeys) -> None:
        prefix = keys.holders.split(":{", 1)[0]
        self.proc = subprocess.Popen(
            [sys.executable, "-c", HOLDER, redis_server.url, prefix],
            cwd=ROOT, stdout=subprocess.PIPE, text=True,
        )

    async def line(self, word: str) -> str:
        """The value of the child's next output line, which must start with ``word``."""
        assert self.proc.stdout is not None
        async with asyncio.timeout(60):  # a cold interpreter on a busy machine
            line = await asyncio.to_thread(self.proc.stdout.readline)
        kind, _, value = line.strip().partition(" ")
        assert kind == word, f"child said {line!r}"
        return value

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.kill()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@pytest.fixture
def holders(redis_server: RedisServer, keys: LimiterKeys) -> Iterator[list[Holder]]:
    started: list[Holder] = []
    yield started
    for holder in started:
        holder.close()


def make_limiter(
    redis: RedisClient, keys: LimiterKeys, registry: CollectorRegistry | None = None,
    **config: float,
) -> ClusterLimiter:
    settings = {"limit": 1, "lease_s": LEASE_S, **config}
    return ClusterLimiter(
        redis, keys, LimiterConfig(**settings),  # type: ignore[arg-type]
        TranscriptionMetrics(registry or CollectorRegistry()),
    )


async def server_ms(redis: RedisClient) -> int:
    seconds, micros = await redis.time()
    return int(seconds) * 1000 + int(micros) // 1000


async def test_a_killed_holders_permit_is_free_long_before_its_lease(
    redis: RedisClient, redis_server: RedisServer, keys: LimiterKeys, holders: list[Holder]
) -> None:
    holder = Holder(redis_server, keys)
    holders.append(holder)
    process_id = await holder.line("process")
    holder_id = await holder.line("holding")
    assert holder_id.startswith(f"{process_id}:")
    assert await redis.zscore(keys.processes, process_id) is not None
    lease_end_ms = await redis.zscore(keys.holders, holder_id)
    assert lease_end_ms is not None

    registry = CollectorRegistry()
    async with make_limiter(redis, keys, registry) as other:
        with structlog.testing.capture_logs() as logs:
            holder.kill()
            killed_ms = await server_ms(redis)
            async with other.permit(deadline=time.monotonic() + FREED_WITHIN_S):
                granted_ms = await server_ms(redis)
                assert await redis.zscore(keys.holders, holder_id) is None

    assert granted_ms < lease_end_ms  # the lease would have kept it for a minute more
    print(f"permit free {granted_ms - killed_ms} ms after kill -9 (lease {LEASE_S:.0f} s)")
    # Counted as a reclaimed lease, logged as a dead process under the bound's name.
    assert registry.get_sample_value("echo_transcription_leases_reclaimed_total") == 1
    reaped = [e for e in logs if e["event"] == "permits_dead_processes_reaped"]
    assert [(e["bound"], e["processes"], e["permits_freed"]) for e in reaped] == [
        ("transcription", [process_id], 1)
    ]
    assert await redis.zscore(keys.processes, process_id) is None


async def test_a_killed_waiters_place_no_longer_blocks_the_waiter_behind_it(
    redis: RedisClient, redis_server: RedisServer, keys: LimiterKeys, holders: list[Holder]
) -> None:
    got_it = asyncio.Event()
    done = asyncio.Event()

    async with make_limiter(redis, keys) as first, make_limiter(redis, keys) as behind:

        async def wait_behind() -> None:
            async with behind.permit():
                got_it.set()
                await done.wait()

        async with first.permit():
            holder = Holder(redis_server, keys)
            holders.append(holder)
            process_id = await holder.line("process")
            queue = await wait_until(
                lambda: redis.zrange(keys.queue, 0, -1), until=lambda ids: len(ids) == 1,
                timeout_s=30, message="the child never queued",
            )
            dead_place = str(queue[0])
            assert dead_place.startswith(f"{process_id}:")
            later = asyncio.create_task(wait_behind())
            await wait_until(
                lambda: redis.zrange(keys.queue, 0, -1), until=lambda ids: len(ids) == 2,
                timeout_s=30, message="the live waiter never queued behind the child",
            )
            holder.kill()
            await wait_until(
                lambda: redis.zscore(keys.queue, dead_place), until=lambda rank: rank is None,
                timeout_s=FREED_WITHIN_S, message="the dead waiter kept its place",
            )
        # The live waiter is next now, and gets the permit once it is given back.
        await wait_until(got_it.is_set, timeout_s=FREED_WITHIN_S,
                         message="the live waiter never got the permit")
        done.set()
        await later


async def test_a_live_holder_keeps_its_permit_past_its_liveness_by_heartbeats(
    redis: RedisClient, keys: LimiterKeys
) -> None:
    """A call longer than the record's expiry (1 s here) is no death: heartbeats renew it."""
    async with make_limiter(redis, keys, liveness_s=1.0, heartbeat_s=0.2) as limiter, make_limiter(
        redis, keys
    ) as other:
        first_expiry_ms = await redis.zscore(keys.processes, limiter.process_id)
        assert first_expiry_ms is not None
        async with limiter.permit() as permit:
            # Well past the expiry the record had when the call began.
            await wait_until(
                lambda: server_ms(redis), until=lambda now: now > first_expiry_ms + 1000,
                timeout_s=20, interval_s=0.1,
            )
            assert not permit.lost.is_set()
            assert await redis.zscore(keys.holders, permit.holder_id) is not None
            renewed_ms = await redis.zscore(keys.processes, limiter.process_id)
            assert renewed_ms is not None and renewed_ms > await server_ms(redis)
            with pytest.raises(PermitUnavailable):  # the other process still cannot have it
                async with other.permit(deadline=time.monotonic() + 0.3):
                    pass
        assert (await other.state())["permits_in_use"] == 0


async def test_a_holder_whose_heartbeats_fail_loses_its_permit_when_its_record_expires(
    redis: RedisClient, keys: LimiterKeys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cut off from Redis, a process keeps its permits only while its record lives."""
    registry = CollectorRegistry()
    limiter = make_limiter(redis, keys, registry, liveness_s=1.0, heartbeat_s=0.2)

    async def unreachable(**_: object) -> object:
        raise RedisConnectionError("heartbeat cut off")

    async with limiter, make_limiter(redis, keys) as other, limiter.permit() as permit:
        monkeypatch.setattr(limiter._liveness, "_heartbeat", unreachable)
        # The other process gets the permit once the record has expired (the bound holds)...
        async with other.permit(deadline=time.monotonic() + FREED_WITHIN_S):
            # ...and by then the holder has been told: it stops before anyone else starts.
            assert permit.lost.is_set()
    assert registry.get_sample_value("echo_transcription_leases_lost_total") == 1


async def test_a_process_whose_record_lapsed_finds_its_permits_lost_and_comes_back(
    redis: RedisClient, keys: LimiterKeys
) -> None:
    """As after a stall longer than the liveness: its next heartbeat frees its permits like a
    dead process's, tells their holders (long before the lease renewal would), and renews
    the record."""
    async with make_limiter(redis, keys) as limiter, limiter.permit() as permit:
        await redis.zadd(keys.processes, {limiter.process_id: 1})  # expired long ago
        await wait_until(lambda: permit.lost.is_set(), timeout_s=FREED_WITHIN_S,
                         message="the permit of a lapsed process was not lost")
        assert await redis.zscore(keys.holders, permit.holder_id) is None
        assert (await redis.zscore(keys.processes, limiter.process_id) or 0) > 1


async def test_a_closed_limiter_removes_its_process_record(
    redis: RedisClient, keys: LimiterKeys
) -> None:
    limiter = make_limiter(redis, keys)
    async with limiter:
        assert await redis.zscore(keys.processes, limiter.process_id) is not None
    assert await redis.zscore(keys.processes, limiter.process_id) is None
    assert await redis.zcard(keys.processes) == 0


async def test_the_owners_keep_a_process_record_while_open(
    redis: RedisClient, redis_settings: Settings
) -> None:
    """``open_llm`` and ``open_transcription`` start their limiter's heartbeat and close it."""
    redis_settings = redis_settings.replace(redis_key_prefix=f"test-{uuid.uuid4().hex[:8]}")
    prefix = redis_settings.redis_key_prefix
    llm_records = LimiterKeys.for_prefix(prefix).processes
    transcription_records = LimiterKeys.for_prefix(prefix, tag="transcription").processes
    async with open_llm(redis_settings, redis, CollectorRegistry()) as llm:
        assert await redis.zscore(llm_records, llm.limiter.process_id) is not None
    assert await redis.zscore(llm_records, llm.limiter.process_id) is None
    async with open_transcription(
        redis_settings, redis, CollectorRegistry(), transcriber=NoopTranscriber()
    ):
        assert await redis.zcard(transcription_records) == 1
    assert await redis.zcard(transcription_records) == 0
