"""The consumer runtime across real worker processes: kill -9, random kills, SIGTERM."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from streams_support import as_text
from streams_worker_proc import GROUP, STREAM, apply_once
from waiting import wait_until

from config import Settings
from gateway.wiring import publisher_for
from storage.redis_client import RedisClient, open_redis
from streams.envelope import Envelope
from streams.names import StreamNames

LEASE_S = 2.0
DEADLINE_S = 60.0
pytestmark = pytest.mark.slow


@pytest.fixture
def proc_env(base_env: dict[str, str]) -> dict[str, str]:
    return {**base_env, "STREAM_LEASE_S": str(LEASE_S), "SHUTDOWN_GRACE_S": "1"}


@pytest.fixture
async def r(proc_env: dict[str, str]) -> AsyncIterator[RedisClient]:
    async with open_redis(Settings.from_env(proc_env)) as client:
        await client.flushdb()
        yield client


@pytest.fixture
def spawn(
    proc_env: dict[str, str], project_root: Path, tmp_path: Path
) -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []

    def start(concurrency: int = 8) -> subprocess.Popen[bytes]:
        # The child keeps its own copy of the log's descriptor; ours closes at once.
        with open(tmp_path / f"worker-{len(procs)}.log", "wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "tests.streams_worker_proc", "--concurrency",
                 str(concurrency)],
                cwd=project_root, env={**os.environ, **proc_env}, stdout=log,
                stderr=subprocess.STDOUT,
            )
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


KEYS = StreamNames().keys(STREAM)
BASE = f"echo:{{{STREAM}}}"


async def server_time_s(r: RedisClient) -> float:
    seconds, micros = await r.time()
    return int(seconds) + int(micros) / 1e6


async def handlers_of(r: RedisClient, event_id: str) -> list[str]:
    """The pids of the workers that started ``event_id``, in order (a log line is
    ``pid event deliveries attempts crash``)."""
    starts = [as_text(line).split() for line in await r.lrange(f"{BASE}:log", 0, -1)]
    return [start[0] for start in starts if start[1] == event_id]


async def settled(r: RedisClient, expected_effects: int) -> bool:
    if await r.hlen(f"{BASE}:effects") < expected_effects:
        return False
    groups = await r.xinfo_groups(KEYS.stream)
    return all(g["pending"] == 0 and g["lag"] == 0 for g in groups)


async def test_entry_of_a_killed_worker_is_handled_by_another_within_lease_plus_2s(
    r: RedisClient, spawn: Callable[[], subprocess.Popen[bytes]], proc_env: dict[str, str]
) -> None:
    publisher = publisher_for(r, Settings.from_env(proc_env))
    a = spawn()
    event_id = Envelope("work", {}).id
    await publisher.publish_envelope(STREAM, Envelope("work", {"first_sleep_s": 60}, id=event_id))
    await wait_until(lambda: handlers_of(r, event_id), until=lambda pids: pids == [str(a.pid)],
                     timeout_s=DEADLINE_S, message="the first worker did not take the entry")
    b = spawn()
    await wait_until(lambda: _consumers(r, 2), timeout_s=DEADLINE_S)
    a.kill()
    a.wait()
    killed_at = await server_time_s(r)
    await wait_until(lambda: handlers_of(r, event_id),
                     until=lambda pids: pids == [str(a.pid), str(b.pid)],
                     timeout_s=DEADLINE_S, message="the second worker did not take the entry over")
    taken_after_s = await server_time_s(r) - killed_at
    await wait_until(lambda: settled(r, 1), timeout_s=DEADLINE_S)
    assert await r.hget(f"{BASE}:effects", event_id) == "1"
    # The bound; reclaim runs every lease/4, so the usual figure is ~lease + 0.5 s.
    assert taken_after_s <= LEASE_S + 2.0, taken_after_s


async def _consumers(r: RedisClient, n: int) -> bool:
    return len(await r.xinfo_consumers(KEYS.stream, GROUP)) >= n


async def test_ten_thousand_events_three_workers_random_kills_every_effect_once(
    r: RedisClient, spawn: Callable[[], subprocess.Popen[bytes]], proc_env: dict[str, str]
) -> None:
    publisher = publisher_for(r, Settings.from_env(proc_env))
    total = 10_000
    for start in range(0, total, 1000):
        await publisher.publish_many(
            STREAM, [Envelope("work", {"sleep_s": 0.005}) for _ in range(1000)]
        )
    workers = [spawn() for _ in range(3)]
    rng = random.Random(7)
    kills = 0
    await wait_until(lambda: _effects_at_least(r, 500), timeout_s=DEADLINE_S)
    while kills < 4 and await r.hlen(f"{BASE}:effects") < total * 0.9:
        victim = workers.pop(rng.randrange(len(workers)))
        victim.kill()
        victim.wait()
        kills += 1
        workers.append(spawn())
        await asyncio.sleep(rng.uniform(0.5, 1.5))  # the test's own schedule of random kills
    await wait_until(lambda: settled(r, total), timeout_s=120, message="never settled")
    effects = await r.hgetall(f"{BASE}:effects")
    assert len(effects) == total
    assert set(effects.values()) == {"1"}
    assert kills >= 2
    # Some entries really were run twice (killed mid-handler), yet applied once.
    starts = await r.hgetall(f"{BASE}:starts")
    assert len(starts) == total


async def _effects_at_least(r: RedisClient, n: int) -> bool:
    return await r.hlen(f"{BASE}:effects") >= n


async def test_sigterm_mid_work_loses_nothing(
    r: RedisClient, spawn: Callable[[], subprocess.Popen[bytes]], proc_env: dict[str, str]
) -> None:
    publisher = publisher_for(r, Settings.from_env(proc_env))
    await publisher.publish_many(
        STREAM, [Envelope("work", {"first_sleep_s": 5}) for _ in range(20)]
    )
    a = spawn()
    await wait_until(lambda: _starts_at_least(r, 8), timeout_s=DEADLINE_S)
    a.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(a.wait, 30) == 0
    spawn()
    await wait_until(lambda: settled(r, 20), timeout_s=DEADLINE_S)
    effects = await r.hgetall(f"{BASE}:effects")
    assert len(effects) == 20 and set(effects.values()) == {"1"}


async def _starts_at_least(r: RedisClient, n: int) -> bool:
    return await r.hlen(f"{BASE}:starts") >= n


async def test_apply_once_applies_the_workers_effect_once_per_marker(r: RedisClient) -> None:
    """The worker's exactly-once effect holds when duplicates race (a reclaimed entry
    still running in its old worker)."""
    marker = f"{BASE}:done:{GROUP}:idem-1"

    def effect(pipe: Any) -> None:
        pipe.hincrby(f"{BASE}:state", "count", 1)

    results = await asyncio.gather(*(apply_once(r, marker, effect) for _ in range(5)))
    assert sorted(results) == [False, False, False, False, True]
    assert await r.hget(f"{BASE}:state", "count") == "1"
    assert 0 < await r.ttl(marker)


async def test_killed_worker_counts_a_crash_for_its_running_entry_and_nothing_for_queued_ones(
    r: RedisClient, spawn: Callable[..., subprocess.Popen[bytes]], proc_env: dict[str, str]
) -> None:
    """kill -9 of a worker running one entry with another queued behind it (concurrency 1,
    bound 2): the next worker runs the queued one as attempt 1 and the running one as
    attempt 2, reclaimed after a crash (issue #14: taken-but-unstarted entries used to count
    as failed deliveries)."""
    publisher = publisher_for(r, Settings.from_env(proc_env))
    running = Envelope("work", {"first_sleep_s": 60})
    queued = Envelope("work", {})
    running_entry = await publisher.publish_envelope(STREAM, running)
    await publisher.publish_envelope(STREAM, queued)
    a = spawn(1)
    await wait_until(lambda: handlers_of(r, running.id), until=lambda pids: pids == [str(a.pid)],
                     timeout_s=DEADLINE_S, message="the first worker did not start the entry")
    await wait_until(lambda: _pending_of(r, str(a.pid)), until=lambda n: n == 2,
                     timeout_s=DEADLINE_S, message="the first worker did not hold both")
    await wait_until(lambda: r.hget(KEYS.attempts, f"{GROUP}:{running_entry}"),
                     until=lambda v: v == "1 0 0", timeout_s=DEADLINE_S,
                     message="the start was never recorded")
    b = spawn()
    await wait_until(lambda: _consumers(r, 2), timeout_s=DEADLINE_S)
    a.kill()
    a.wait()
    await wait_until(lambda: settled(r, 2), timeout_s=DEADLINE_S)
    runs = [line.split() for line in await r.lrange(f"{BASE}:log", 0, -1)]
    # pid, event id, deliveries, attempts, reclaimed after a crash
    assert sorted(runs) == sorted([
        [str(a.pid), running.id, "1", "1", "0"],
        [str(b.pid), running.id, "2", "2", "1"],
        [str(b.pid), queued.id, "2", "1", "0"],
    ])
    assert await r.hlen(KEYS.attempts) == 0
    assert await r.xlen(KEYS.dead) == 0


async def _pending_of(r: RedisClient, pid: str) -> int:
    for consumer in await r.xinfo_consumers(KEYS.stream, GROUP):
        if str(consumer["name"]).endswith(f"-{pid}"):
            return int(consumer["pending"])
    return 0
