"""The upload-URL limit is exact across processes: ``serve --workers 4`` grants 40 of 200."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from asyncio.subprocess import Process
from typing import Any

import aiohttp
import pytest
from api_support import ADMIN_TOKEN, HOST_HEADERS, P
from waiting import wait_until

from devstack.children import child_preexec
from devstack.servers import free_port
from storage.redis_client import RedisClient
from storage.s3_client import S3Client


async def _wait_until_up(base: str, proc: Process, timeout_s: float = 60) -> None:
    async with aiohttp.ClientSession() as http:

        async def healthy() -> bool:
            assert proc.returncode is None, "the gateway exited during start"
            async with http.get(f"{base}/healthz") as resp:
                return resp.status == 200

        await wait_until(healthy, timeout_s=timeout_s, interval_s=0.2,
                         retry_on=(aiohttp.ClientError,), message="the gateway did not start")


@pytest.mark.slow
async def test_four_processes_grant_exactly_40_of_200_concurrent_requests(
    env: dict[str, str], redis: RedisClient, s3: S3Client
) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc_env = {**os.environ, **env, "ADMIN_TOKEN": ADMIN_TOKEN, "LOG_LEVEL": "warning"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway.cli", "serve", "--host", "127.0.0.1", "--port", str(port),
        "--workers", "4",
        env=proc_env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        # A killed test run leaves no gateway behind. Safe in a process with threads: the
        # hook only calls prctl (devstack.children).
        preexec_fn=child_preexec(),
    )
    try:
        await _wait_until_up(base, proc)
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=200, force_close=True)
        ) as http:
            async with http.get(f"{base}/api/openapi.json") as r:
                assert r.status == 200, "create_app must call gateway.routes.add_api_routes(app)"
            async with http.post(f"{base}/api/host/projects", json={"name": "p"}, headers=HOST_HEADERS) as r:
                assert r.status == 201, await r.text()
                project = await r.json()
            async with http.post(f"{base}{P}/projects/{project['id']}/conversations/initiate",
                                 json={"name": "A"}) as r:
                assert r.status == 200, await r.text()
                cid = (await r.json())["id"]

            async def ask() -> tuple[int, Any]:
                async with http.post(f"{base}{P}/conversations/{cid}/get-upload-url",
                                     json={"filename": "a.webm", "content_type": "audio/webm"}) as r:
                    return r.status, r.headers.get("Retry-After")

            results = await asyncio.gather(*(ask() for _ in range(200)))
        statuses = [s for s, _ in results]
        assert statuses.count(200) == 40
        assert statuses.count(429) == 160
        assert all(ra is not None and 1 <= int(ra) <= 60 for s, ra in results if s == 429)
    finally:
        with contextlib.suppress(ProcessLookupError):  # it may have exited already
            proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), 30)
        except TimeoutError:
            proc.kill()
            await proc.wait()
