"""A Redis restart: requests get a fast 503, then the same process recovers by itself."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from aiohttp import web

from config import Settings
from devstack.servers import RedisServer
from gateway.app import create_app
from gateway.appkeys import REDIS


async def _counter(request: web.Request) -> web.Response:
    value = await request.app[REDIS].incr("outage-test:counter")
    return web.json_response({"value": value})


async def _poll_until(client, path: str, status: int, deadline_s: float) -> float:
    started = time.monotonic()
    while True:
        response = await client.get(path)
        if response.status == status:
            return time.monotonic() - started
        assert time.monotonic() - started < deadline_s, f"{path} never answered {status}"
        await asyncio.sleep(0.1)


async def test_redis_stopped_gives_fast_503s_and_a_restart_recovers(
    aiohttp_client, settings: Settings, s3, tmp_path: Path
) -> None:
    server = RedisServer(tmp_path / "redis")
    await server.start()
    try:
        app = create_app(settings.replace(redis_url=server.url))
        app.router.add_post("/test/counter", _counter)
        client = await aiohttp_client(app)

        assert (await client.post("/test/counter")).status == 200
        assert (await client.get("/readyz")).status == 200

        server.kill()
        started = time.monotonic()
        response = await client.post("/test/counter")
        elapsed_s = time.monotonic() - started
        assert response.status == 503
        assert response.headers["Retry-After"] == "1"
        assert (await response.json())["code"] == "store_unavailable"
        # Generous on a loaded machine; the client's own budget is well under a second.
        assert elapsed_s < 3.0

        ready = await client.get("/readyz")
        assert ready.status == 503
        assert (await ready.json())["failed"] == ["redis"]

        await server.start()  # same port
        await _poll_until(client, "/readyz", 200, deadline_s=15)
        response = await client.post("/test/counter")
        assert response.status == 200
    finally:
        server.stop()
