"""Security of the HTTP surface: token-protected routes, CORS and body limits, over every
route the application registers (a route added later is covered without editing this file).

- Every route that is not public (the participant API, health, metrics, the OpenAPI
  document) needs the host token: a missing or wrong one is a 401 whose answer is the same
  whether the ids in the path exist or not.
- CORS: an unknown origin gets no CORS header, on preflight (refused) or on the request;
  an allowed one is echoed exactly, never ``*``.
- A body over ``MAX_BODY_BYTES`` is a 413, declared or streamed; the legacy upload's
  stream is bounded by ``UPLOAD_MAX_BYTES`` and leaves no object behind.
"""

from __future__ import annotations

import base64
import json
import re
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import FormData
from api_support import (
    ADMIN_TOKEN,
    HOST_HEADERS,
    ORIGIN,
    ApiClient,
    MakeClient,
    P,
    create_project,
    initiate,
    new_id,
)

from config import Settings
from config.parsing import SettingsError
from gateway.api_docs import spec_of
from gateway.appkeys import SETTINGS
from storage.s3_client import open_s3

#: Routes anyone may call. Every other route must refuse a request without the host token:
#: the host API, auto-select, and the admin recovery API when it comes (whatever its path).
PUBLIC_ROUTES = re.compile(
    r"^(/api/participant/.*|/healthz|/readyz|/metrics|/api/openapi\.json"
    # The browser pages (gateway/pages.py): static files; the host page asks for the token.
    r"|/|/p/\{project_id\}|/host/\{project_id\}|/demo\.json|/static)$"
)
#: Query strings a route needs to answer 200 with the token.
REQUIRED_QUERY = {"/api/admin/dead-letters": "?stream=llm"}

#: Authorization headers that must not open a protected route.
BAD_CREDENTIALS: list[dict[str, str]] = [
    {},
    {"Authorization": ""},
    {"Authorization": "Bearer"},
    {"Authorization": "Bearer "},
    {"Authorization": "Bearer wrong-token"},
    {"Authorization": f"Bearer {ADMIN_TOKEN}x"},
    {"Authorization": f"Bearer {ADMIN_TOKEN[:-1]}"},
    {"Authorization": f"Bearer {ADMIN_TOKEN.upper()}"},
    {"Authorization": ADMIN_TOKEN},
    {"Authorization": f"Basic {base64.b64encode(f'admin:{ADMIN_TOKEN}'.encode()).decode()}"},
    {"Authorization": f"Token {ADMIN_TOKEN}"},
    {"X-Admin-Token": ADMIN_TOKEN},
    {"Cookie": f"token={ADMIN_TOKEN}"},
]

UNKNOWN_ORIGINS = [
    "https://evil.example.com", "null", "https://portal.example.org.evil.example.com",
    "https://evil.portal.example.org", "http://portal.example.org",
    "https://portal.example.org:8443", "https://portal.example.org/", "*",
    "https://portal.example.org, https://evil.example.com",
]


def _routes(client: ApiClient) -> list[tuple[str, str]]:
    """(method, path pattern) of every registered route but HEAD and OPTIONS."""
    found = set()
    for route in client.app.router.routes():
        canonical = getattr(route.resource, "canonical", None)
        if canonical and route.method not in ("HEAD", "OPTIONS", "*"):
            found.add((route.method, canonical))
    return sorted(found)


def protected_routes(client: ApiClient) -> list[tuple[str, str]]:
    return [(m, path) for m, path in _routes(client) if not PUBLIC_ROUTES.match(path)]


def _fill(pattern: str, ids: dict[str, str]) -> str:
    """The path with each ``{name}`` replaced by ``ids[name]`` (a fresh UUID if not given)."""
    return re.sub(r"\{(\w+)(?::[^}]*)?\}", lambda m: ids.get(m.group(1), new_id()), pattern)


def _answer(status: int, headers: Any, body: bytes) -> tuple[int, dict[str, str], Any]:
    """What a client learns from an answer, less what differs per request."""
    varying = {"x-request-id", "date", "content-length"}
    kept = {k.lower(): v for k, v in headers.items() if k.lower() not in varying}
    doc = json.loads(body)
    if isinstance(doc, dict):
        doc.pop("request_id", None)
    return status, kept, doc


@pytest.fixture
async def existing(client: ApiClient) -> dict[str, str]:
    """Ids that exist: a project, its conversation and a chunk, an auto-select job."""
    project = await create_project(client)
    conversation = await initiate(client, project["id"])
    resp = await client.post(f"/api/projects/{project['id']}/auto-select",
                             json={"query": "parks"}, headers=HOST_HEADERS)
    assert resp.status == 202, await resp.text()
    return {"project_id": project["id"], "conversation_id": conversation["id"],
            "job_id": (await resp.json())["job_id"], "chunk_id": new_id(), "visitor_id": "v1"}


async def test_every_non_public_route_refuses_a_missing_or_wrong_token_alike_for_any_id(
    client: ApiClient, existing: dict[str, str]
) -> None:
    routes = protected_routes(client)
    assert {p for _, p in routes} >= {"/api/host/projects", "/api/jobs/{job_id}"}
    unknown = {"project_id": new_id(), "conversation_id": new_id(), "job_id": uuid.uuid4().hex}
    malformed = {name: "not-an-id" for name in unknown}
    for method, pattern in routes:
        for credentials in BAD_CREDENTIALS:
            answers = []
            for ids in (existing, unknown, malformed):
                resp = await client.request(method, _fill(pattern, ids), json={},
                                            headers=credentials)
                answers.append(_answer(resp.status, resp.headers, await resp.read()))
            status, headers, body = answers[0]
            assert status == 401, (method, pattern, credentials, answers[0])
            assert headers["www-authenticate"] == "Bearer"
            assert body["code"] == "unauthorized" and isinstance(body["detail"], str)
            # Nothing tells an existing id from an unknown or malformed one.
            assert answers[1] == answers[0] and answers[2] == answers[0], (method, pattern)


async def test_with_the_token_the_same_ids_are_told_apart(
    client: ApiClient, existing: dict[str, str]
) -> None:
    """(The test above would pass vacuously if its 'existing' ids did not exist.)"""
    for method, pattern in protected_routes(client):
        if method != "GET":
            continue
        query = REQUIRED_QUERY.get(pattern, "")
        found = await client.get(_fill(pattern, existing) + query, headers=HOST_HEADERS)
        assert found.status == 200, (pattern, await found.text())
        if "{" in pattern:
            missing = await client.get(_fill(pattern, {}) + query, headers=HOST_HEADERS)
            assert missing.status == 404, pattern


async def test_with_no_admin_token_configured_nothing_opens_a_protected_route(
    make_client: MakeClient,
) -> None:
    client = await make_client(ADMIN_TOKEN="")
    for method, pattern in protected_routes(client):
        for credentials in ({"Authorization": "Bearer "}, {"Authorization": "Bearer x"},
                            HOST_HEADERS):
            resp = await client.request(method, _fill(pattern, {}), json={}, headers=credentials)
            assert resp.status == 401, (method, pattern, credentials)


async def test_a_preflight_from_an_unknown_origin_is_refused_on_every_route(
    client: ApiClient,
) -> None:
    for method, pattern in _routes(client):
        for origin in UNKNOWN_ORIGINS:
            resp = await client.options(_fill(pattern, {}), headers={
                "Origin": origin, "Access-Control-Request-Method": method,
                "Access-Control-Request-Headers": "content-type, authorization",
            })
            assert resp.status == 403, (pattern, origin)
            assert not [h for h in resp.headers if h.lower().startswith("access-control-")]


async def test_an_unknown_origin_gets_no_cors_header_on_the_request_itself(
    client: ApiClient, existing: dict[str, str]
) -> None:
    """The browser then refuses the page the answer (success and error answers alike)."""
    for method, pattern in _routes(client):
        for origin in UNKNOWN_ORIGINS:
            resp = await client.request(method, _fill(pattern, existing), json={},
                                        headers={"Origin": origin, **HOST_HEADERS})
            assert not [h for h in resp.headers if h.lower().startswith("access-control-")], (
                method, pattern, origin, resp.status)
            assert "Origin" in resp.headers.getall("Vary", []), (method, pattern)


async def test_the_allowed_origin_is_echoed_exactly_never_a_wildcard(
    client: ApiClient, existing: dict[str, str]
) -> None:
    for method, pattern in _routes(client):
        preflight = await client.options(_fill(pattern, existing), headers={
            "Origin": ORIGIN, "Access-Control-Request-Method": method})
        resp = await client.request(method, _fill(pattern, existing), json={},
                                    headers={"Origin": ORIGIN})
        for answer in (preflight, resp):
            assert answer.headers["Access-Control-Allow-Origin"] == ORIGIN, (method, pattern)
            assert answer.headers["Access-Control-Allow-Credentials"] == "true"


@pytest.mark.parametrize("origins", ["*", "https://portal.example.org,*"])
def test_a_wildcard_origin_is_refused_as_a_setting(env: dict[str, str], origins: str) -> None:
    with pytest.raises(SettingsError, match="CORS_ALLOW_ORIGINS"):
        Settings.from_env({**env, "CORS_ALLOW_ORIGINS": origins})


LIMIT = 4096


@pytest.fixture
async def limited(make_client: MakeClient) -> ApiClient:
    return await make_client(MAX_BODY_BYTES=str(LIMIT), UPLOAD_MAX_BYTES=str(2 * LIMIT))


def _body_routes(client: ApiClient, *, declared_only: bool = False) -> list[tuple[str, str]]:
    """Routes that may carry a body; ``declared_only``: those whose ``@endpoint`` declares one
    (the others, such as finish, check-s3 or recover, answer without reading a body)."""
    declared = {
        (route.method, getattr(route.resource, "canonical", ""))
        for route in client.app.router.routes()
        if (spec := spec_of(route.handler)) is not None
        and (spec.body is not None or spec.body_schema is not None)
    }
    return [(m, p) for m, p in _routes(client)
            if m in ("POST", "PUT", "PATCH") and not p.endswith("/upload-chunk")
            and (not declared_only or (m, p) in declared)]


async def test_a_declared_body_over_the_limit_is_413_on_every_route(
    limited: ApiClient, existing_limited: dict[str, str]
) -> None:
    oversized = json.dumps({"name": "x" * LIMIT}).encode()
    for method, pattern in _body_routes(limited):
        resp = await limited.request(method, _fill(pattern, existing_limited), data=oversized,
                                     headers={"Content-Type": "application/json", **HOST_HEADERS})
        assert resp.status == 413, (method, pattern, resp.status)
        assert (await resp.json())["code"] == "payload_too_large"


async def _stream(total: int, piece: int = 1024) -> AsyncIterator[bytes]:
    yield b'{"content": "'
    for _ in range(total // piece):
        yield b"x" * piece
    yield b'"}'


async def test_a_streamed_body_over_the_limit_is_413_on_every_route_that_reads_one(
    limited: ApiClient, existing_limited: dict[str, str]
) -> None:
    """Without Content-Length (chunked), the limit holds while the body is read."""
    routes = _body_routes(limited, declared_only=True)
    assert len(routes) >= 5, routes  # initiate, get-upload-url, confirm, upload-text, host...
    for method, pattern in routes:
        resp = await limited.request(method, _fill(pattern, existing_limited),
                                     data=_stream(2 * LIMIT),
                                     headers={"Content-Type": "application/json", **HOST_HEADERS})
        assert resp.status == 413, (method, pattern, resp.status)
        assert (await resp.json())["code"] == "payload_too_large"


@pytest.fixture
async def existing_limited(limited: ApiClient) -> dict[str, str]:
    project = await create_project(limited)
    conversation = await initiate(limited, project["id"])
    return {"project_id": project["id"], "conversation_id": conversation["id"],
            "job_id": uuid.uuid4().hex, "chunk_id": new_id(), "visitor_id": "v1"}


async def test_the_legacy_upload_is_bounded_in_stream_and_leaves_nothing(
    limited: ApiClient, existing_limited: dict[str, str]
) -> None:
    cid = existing_limited["conversation_id"]
    url = f"{P}/conversations/{cid}/upload-chunk"

    def form(size: int) -> FormData:
        data = FormData()
        data.add_field("timestamp", "2026-01-01T10:00:00Z")
        data.add_field("chunk", b"x" * size, filename="a.webm", content_type="audio/webm")
        return data

    declared = await limited.post(url, data=form(4 * LIMIT))
    assert declared.status == 413

    async def streamed() -> AsyncIterator[bytes]:
        boundary = "b0undary"
        yield (f"--{boundary}\r\nContent-Disposition: form-data; name=\"chunk\"; "
               f"filename=\"a.webm\"\r\nContent-Type: audio/webm\r\n\r\n").encode()
        for _ in range(4):
            yield b"x" * LIMIT
        yield f"\r\n--{boundary}--\r\n".encode()

    resp = await limited.post(url, data=streamed(),
                              headers={"Content-Type": "multipart/form-data; boundary=b0undary"})
    assert resp.status == 413, await resp.text()
    settings = limited.app[SETTINGS]
    async with open_s3(settings) as s3:
        listed = await s3.list_objects_v2(Bucket=settings.s3_bucket, Prefix=f"conversation/{cid}/")
    assert "Contents" not in listed
    assert (await limited.post(url, data=form(LIMIT))).status == 200  # within the bound
