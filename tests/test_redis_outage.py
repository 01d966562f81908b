"""A Redis restart: requests get a fast 503, then the same process recovers by itself."""

from __future__ import annotations

import time
from pathlib import Path

from aiohttp import web
from api_support import ADMIN_TOKEN, HOST_HEADERS, ApiClient, P
from pytest_aiohttp import AiohttpClient
from waiting import wait_until

from config import Settings
from config.settings import Secret
from devstack.servers import RedisServer
from gateway.app import create_app
from gateway.appkeys import REDIS
from storage.s3_client import S3Client


async def _counter(request: web.Request) -> web.Response:
    value = await request.app[REDIS].incr("outage-test:counter")
    return web.json_response({"value": value})


async def _until_ready_again(client: ApiClient) -> None:
    await wait_until(lambda: client.get("/readyz"), until=lambda response: response.status == 200,
                     timeout_s=15, interval_s=0.1, message="/readyz never answered 200")


async def test_redis_stopped_gives_fast_503s_and_a_restart_recovers(
    aiohttp_client: AiohttpClient, settings: Settings, s3: S3Client, tmp_path: Path
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
        await _until_ready_again(client)
        response = await client.post("/test/counter")
        assert response.status == 200
    finally:
        server.stop()


async def test_get_upload_url_over_the_auto_pipeline_gives_503s_then_recovers(
    aiohttp_client: AiohttpClient, settings: Settings, s3: S3Client, tmp_path: Path
) -> None:
    """The hot path's own connection follows the same contract as the pool."""
    server = RedisServer(tmp_path / "redis")
    await server.start()
    try:
        app = create_app(settings.replace(redis_url=server.url, admin_token=Secret(ADMIN_TOKEN)))
        client = await aiohttp_client(app)
        body = {"filename": "a.webm", "content_type": "audio/webm"}

        async def new_conversation_path() -> str:
            project = await (await client.post("/api/host/projects", json={"name": "p"},
                                               headers=HOST_HEADERS)).json()
            conversation = await (await client.post(
                f"{P}/projects/{project['id']}/conversations/initiate", json={"name": "A"}
            )).json()
            return f"{P}/conversations/{conversation['id']}/get-upload-url"

        path = await new_conversation_path()
        assert (await client.post(path, json=body)).status == 200

        server.kill()
        started = time.monotonic()
        response = await client.post(path, json=body)
        assert response.status == 503
        assert response.headers["Retry-After"] == "1"
        assert (await response.json())["code"] == "store_unavailable"
        assert time.monotonic() - started < 3.0

        await server.start()  # same port, empty (the test server keeps nothing on disk)
        await _until_ready_again(client)
        assert (await client.post(await new_conversation_path(), json=body)).status == 200
    finally:
        server.stop()
