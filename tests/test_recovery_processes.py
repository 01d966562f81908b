"""With three real ``echo-gateway worker`` processes, each running the stuck-work sweeper's
loop, a sweep runs once per interval across them: never two in one interval, never two at
once, every lease taken ends in a recorded run, and when the sweeping process dies another
takes over."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from functools import partial
from itertools import pairwise
from pathlib import Path

import aiohttp
import pytest
from waiting import wait_until

from devstack.children import child_preexec
from devstack.servers import free_port
from storage.conversations import ConversationStore
from storage.redis_client import RedisClient
from storage.s3_client import S3Client
from storage.sweep_lease import SweepLease

INTERVAL_S = 1.0
PROCESSES = 3
METRICS_PORTS = [free_port() for _ in range(PROCESSES)]


@pytest.fixture(scope="module")
def bucket_name() -> str:
    return "test-recovery-processes"


@pytest.fixture
def workers(
    env: dict[str, str], project_root: Path, tmp_path: Path, s3: S3Client
) -> Iterator[list[subprocess.Popen[bytes]]]:
    proc_env = {
        # A short lease: a worker killed mid-run frees it in 2 s.
        **os.environ, **env, "STUCK_SWEEP_INTERVAL_S": str(INTERVAL_S), "STUCK_SWEEP_LEASE_S": "2",
        "SHUTDOWN_GRACE_S": "1",
        "LOG_LEVEL": "info",
    }
    procs = []
    for i in range(PROCESSES):
        # The child keeps its own copy of the log's descriptor; ours closes at once.
        with open(tmp_path / f"worker-{i}.log", "wb") as log:
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "gateway.cli", "worker", "--group", "upload-confirmation",
                 "--metrics-host", "127.0.0.1", "--metrics-port", str(METRICS_PORTS[i])],
                cwd=project_root, env={**proc_env, "CONSUMER_NAME": f"sweeper-{i}"}, stdout=log,
                stderr=subprocess.STDOUT, preexec_fn=child_preexec(),  # noqa: PLW1509 - prctl only
            ))
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.mark.test_timeout(180)
async def test_three_workers_sweep_once_per_interval_between_them(
    redis: RedisClient, workers: list[subprocess.Popen[bytes]],
) -> None:
    store = ConversationStore(redis)
    project = await store.create_project({"name": "p"})
    for _ in range(5):
        await store.create_conversation(project["id"], {"title": "t"})
    lease = SweepLease(redis)
    runs = await wait_until(lambda: lease.runs(20), until=lambda r: len(r) >= 6, timeout_s=120,
                            interval_s=0.2, message="the workers did not sweep")
    assert all(proc.poll() is None for proc in workers), "a worker died"
    runs.reverse()  # oldest first
    print(f"{len(runs)} runs by {sorted({r['owner'] for r in runs})}; gaps (s):",
          [round((b["started_ms"] - a["started_ms"]) / 1000, 2) for a, b in pairwise(runs)])
    for earlier, later in pairwise(runs):
        # Redis-time stamps, both set by the scripts: the rule itself, not a timing.
        assert later["started_ms"] - earlier["started_ms"] >= INTERVAL_S * 1000
        assert later["started_ms"] >= earlier["finished_ms"]
    assert all(r["examined"] == 5 and r["complete"] for r in runs)
    assert {r["owner"] for r in runs} <= {f"sweeper-{i}" for i in range(PROCESSES)}
    # Every token taken (one per acquisition) belongs to a recorded run: no process took the
    # lease without finishing, so none ran a second sweep in an interval.
    tokens = [int(r["token"]) for r in runs]
    assert tokens == list(range(tokens[0], tokens[0] + len(tokens)))
    fence = int(await redis.get(lease.fence_key) or 0)
    assert fence - tokens[-1] <= 1  # at most the run in progress now

    # Every process shows when the cluster last swept, whichever process it was.
    async def last_success_s(port: int) -> float:
        async with aiohttp.ClientSession() as http, \
                http.get(f"http://127.0.0.1:{port}/metrics") as resp:
            text = await resp.text()
        gauge = next(line for line in text.splitlines()
                     if line.startswith("echo_sweeper_last_success_timestamp_seconds "))
        return float(gauge.split()[1])

    for port in METRICS_PORTS:
        await wait_until(partial(last_success_s, port),
                         until=lambda s: s >= runs[0]["finished_ms"] / 1000, timeout_s=30,
                         interval_s=0.2, retry_on=(aiohttp.ClientError,))

    # The others run the loop too: kill the one that has been sweeping, and another takes over.
    sweeping = runs[-1]["owner"]
    workers[int(sweeping.rsplit("-", 1)[1])].kill()
    after = await wait_until(lambda: lease.runs(1), until=lambda r: r and r[0]["owner"] != sweeping,
                             timeout_s=60, interval_s=0.2, message="no other worker took over")
    print(f"after {sweeping} was killed, {after[0]['owner']} swept")
