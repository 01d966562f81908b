"""Fixtures and helpers shared by the participant/host API tests.

A pytest plugin (tests/conftest.py loads it): its fixtures (``api_env``,
``make_client``, ``client``) reach every test module, which imports only the helpers.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Mapping
from typing import Any, Protocol, TypeAlias

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient
from streams_support import read_stream

from config import Settings
from gateway.app import create_app
from gateway.routes import add_api_routes
from storage.redis_client import RedisClient
from storage.s3_client import S3Client

ADMIN_TOKEN = "test-admin-token-0123456789"
ORIGIN = "https://portal.example.org"
HOST_HEADERS = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
P = "/api/participant"
#: Tests that write multi-MiB objects share one bucket: SeaweedFS (``-volume.max=5``)
#: gives every bucket its own volumes, and a new bucket late in a session can find
#: none left for large parts (InternalError on UploadPart).
LARGE_UPLOAD_BUCKET = "test-large-uploads"

#: A test client of the gateway's app.
ApiClient: TypeAlias = TestClient[web.Request, web.Application]


class MakeClient(Protocol):
    """The ``make_client`` fixture: ``await make_client(UPLOAD_MAX_BYTES="1024", ...)``."""

    def __call__(self, **overrides: str) -> Awaitable[ApiClient]: ...


def build_app(settings: Settings) -> web.Application:
    app = create_app(settings)
    if not any(
        getattr(r.resource, "canonical", "").startswith(P) for r in app.router.routes()
    ):
        add_api_routes(app)  # until create_app wires it itself
    return app


@pytest.fixture
def api_env(env: dict[str, str]) -> dict[str, str]:
    return {**env, "ADMIN_TOKEN": ADMIN_TOKEN}


@pytest.fixture
def make_client(
    aiohttp_client: AiohttpClient, redis: RedisClient, s3: S3Client, api_env: dict[str, str]
) -> MakeClient:
    """``await make_client(UPLOAD_MAX_BYTES="1024", ...)``: a test client with extra settings
    (Redis flushed, the test's bucket created)."""

    async def make(**overrides: str) -> ApiClient:
        settings = Settings.from_env({**api_env, **overrides})
        return await aiohttp_client(build_app(settings))

    return make


@pytest.fixture
async def client(make_client: MakeClient) -> ApiClient:
    return await make_client()


async def create_project(client: ApiClient, **fields: Any) -> dict[str, Any]:
    body = {"name": "Town hall", "language": "en", "tags": ["housing", "parks"], **fields}
    resp = await client.post("/api/host/projects", json=body, headers=HOST_HEADERS)
    assert resp.status == 201, await resp.text()
    return dict(await resp.json())


async def initiate(client: ApiClient, project_id: str, **fields: Any) -> dict[str, Any]:
    body = {"name": "Alice", "pin": "1234", "tag_id_list": [], "source": "PORTAL_AUDIO", **fields}
    resp = await client.post(f"{P}/projects/{project_id}/conversations/initiate", json=body)
    assert resp.status == 200, await resp.text()
    return dict(await resp.json())


async def open_conversation(client: ApiClient) -> tuple[dict[str, Any], dict[str, Any]]:
    project = await create_project(client)
    return project, await initiate(client, project["id"])


async def get_upload_url(
    client: ApiClient, conversation_id: str, *, filename: str = "chunk-1.webm",
    content_type: str = "audio/webm;codecs=opus",
) -> dict[str, Any]:
    resp = await client.post(
        f"{P}/conversations/{conversation_id}/get-upload-url",
        json={"filename": filename, "content_type": content_type, "conversation_id": conversation_id},
    )
    assert resp.status == 200, await resp.text()
    return dict(await resp.json())


async def post_to_s3(
    grant: Mapping[str, Any], data: bytes, *, content_type: str | None = None,
    fields: Mapping[str, str] | None = None,
) -> aiohttp.ClientResponse:
    """The browser's upload: every field of the grant, then ``file`` last."""
    form = aiohttp.FormData()
    for name, value in (fields or grant["fields"]).items():
        form.add_field(name, value)
    form.add_field(
        "file", data, filename="chunk.webm",
        content_type=content_type or grant["fields"]["Content-Type"],
    )
    async with aiohttp.ClientSession() as http, http.post(grant["upload_url"], data=form) as resp:
        await resp.read()
        return resp


async def confirm(
    client: ApiClient, conversation_id: str, grant: Mapping[str, Any], **overrides: Any
) -> aiohttp.ClientResponse:
    body = {
        "chunk_id": grant["chunk_id"], "file_url": grant["file_url"],
        "timestamp": "2026-01-01T10:00:00.000Z", "source": "PORTAL_AUDIO", **overrides,
    }
    return await client.post(f"{P}/conversations/{conversation_id}/confirm-upload", json=body)


def new_id() -> str:
    return str(uuid.uuid4())


async def stream_events(redis: RedisClient, stream: str) -> list[dict[str, Any]]:
    """The events of one of the application's streams (default key prefix), decoded."""
    entries = await read_stream(redis, f"echo:{{{stream}}}")
    return [
        {"type": fields["type"], "idem": fields["idem"], "payload": json.loads(fields["payload"])}
        for _, fields in entries
    ]
