"""The HTTP skeleton: request ids, CORS, error bodies, metrics, health and readiness."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from typing import TypeAlias

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient

from config import Settings
from gateway.app import create_app
from storage.s3_client import S3Client

ALLOWED = "https://portal.example.org"

Client: TypeAlias = TestClient[web.Request, web.Application]


@pytest.fixture
async def client(aiohttp_client: AiohttpClient, settings: Settings, s3: S3Client) -> Client:
    """The gateway's app with two test routes: one that fails, one that echoes JSON."""
    app = create_app(settings)

    async def boom(request: web.Request) -> web.Response:
        raise RuntimeError("secret internals")

    async def echo(request: web.Request) -> web.Response:
        return web.json_response(await request.json())

    app.router.add_get("/test/boom", boom)
    app.router.add_post("/test/echo", echo)
    return await aiohttp_client(app)


async def test_request_id_is_made_when_absent_and_echoed_when_given(client: Client) -> None:
    made = await client.get("/healthz")
    assert len(made.headers["X-Request-ID"]) >= 16
    given = await client.get("/healthz", headers={"X-Request-ID": "abc-123"})
    assert given.headers["X-Request-ID"] == "abc-123"


async def test_an_insane_request_id_is_replaced(client: Client) -> None:
    response = await client.get("/healthz", headers={"X-Request-ID": "x" * 500})
    assert response.headers["X-Request-ID"] != "x" * 500


async def test_unexpected_errors_are_a_json_500_without_traceback(client: Client) -> None:
    response = await client.get("/test/boom", headers={"X-Request-ID": "req-1"})
    assert response.status == 500
    body = await response.json()
    assert body == {"detail": "internal error", "code": "internal_error", "request_id": "req-1"}
    assert "secret internals" not in await response.text()


async def test_unknown_route_is_a_json_404(client: Client) -> None:
    response = await client.get("/nope")
    assert response.status == 404
    body = await response.json()
    assert body["code"] == "not_found" and isinstance(body["detail"], str)


async def test_declared_oversized_body_is_413_before_reading(
    client: Client, settings: Settings
) -> None:
    response = await client.post(
        "/test/echo", data=io.BytesIO(b"x" * (settings.max_body_bytes + 1)),
        headers={"Content-Type": "application/json"},
    )
    assert response.status == 413
    assert (await response.json())["code"] == "payload_too_large"


async def test_chunked_oversized_body_is_413_too(client: Client, settings: Settings) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(settings.max_body_bytes // 65536 + 2):
            yield b"x" * 65536

    response = await client.post("/test/echo", data=chunks())
    assert response.status == 413
    assert (await response.json())["code"] == "payload_too_large"


async def test_allowed_origin_is_echoed_with_credentials(client: Client) -> None:
    response = await client.get("/healthz", headers={"Origin": ALLOWED})
    assert response.headers["Access-Control-Allow-Origin"] == ALLOWED
    assert response.headers["Access-Control-Allow-Credentials"] == "true"
    assert "Origin" in response.headers.getall("Vary")


async def test_other_origins_get_no_cors_headers(client: Client) -> None:
    response = await client.get("/healthz", headers={"Origin": "https://evil.example.com"})
    assert response.status == 200
    assert "Access-Control-Allow-Origin" not in response.headers


async def test_preflight_of_allowed_origin_allows_json_posts(client: Client) -> None:
    response = await client.options("/api/participant/anything", headers={
        "Origin": ALLOWED,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type",
    })
    assert response.status == 204
    assert response.headers["Access-Control-Allow-Origin"] == ALLOWED
    assert response.headers["Access-Control-Allow-Credentials"] == "true"
    assert "content-type" in response.headers["Access-Control-Allow-Headers"].lower()
    assert "POST" in response.headers["Access-Control-Allow-Methods"]


async def test_preflight_of_other_origin_is_refused(client: Client) -> None:
    response = await client.options("/api/participant/anything", headers={
        "Origin": "https://evil.example.com", "Access-Control-Request-Method": "POST",
    })
    assert response.status == 403
    assert "Access-Control-Allow-Origin" not in response.headers


async def test_security_headers_are_on_every_response(client: Client) -> None:
    for path in ("/healthz", "/nope"):
        response = await client.get(path)
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["X-Frame-Options"] == "DENY"


async def test_metrics_count_requests_by_route_pattern_and_status(client: Client) -> None:
    await client.get("/healthz")
    await client.get("/nope")
    response = await client.get("/metrics")
    assert response.status == 200
    text = await response.text()
    assert 'echo_http_requests_total{method="GET",route="/healthz",status="200"} 1.0' in text
    assert 'route="unmatched",status="404"' in text
    assert "echo_http_request_duration_seconds_bucket" in text


async def test_ready_when_redis_and_bucket_answer(client: Client) -> None:
    response = await client.get("/readyz")
    assert response.status == 200
    assert (await response.json())["checks"] == {"redis": "ok", "s3": "ok"}


async def test_not_ready_names_a_missing_bucket(
    aiohttp_client: AiohttpClient, settings: Settings
) -> None:
    client = await aiohttp_client(create_app(settings.replace(s3_bucket="no-such-bucket-here")))
    response = await client.get("/readyz")
    assert response.status == 503
    body = await response.json()
    assert body["failed"] == ["s3"] and "no-such-bucket-here" in body["detail"]


def test_request_latency_is_a_cumulative_histogram_per_route_and_status() -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from gateway.metrics import HttpMetrics

    registry = CollectorRegistry()
    metrics = HttpMetrics(registry)
    for duration_s in (0.001, 0.02, 3.0):
        metrics.observe("POST", "/api/x/{id}", 200, duration_s)
    metrics.observe("POST", "/api/x/{id}", 429, 0.001)
    text = generate_latest(registry).decode()
    series = 'method="POST",route="/api/x/{id}",status="200"'
    assert f'echo_http_requests_total{{{series}}} 3.0' in text
    assert f'echo_http_request_duration_seconds_bucket{{le="0.005",{series}}} 1.0' in text
    assert f'echo_http_request_duration_seconds_bucket{{le="0.025",{series}}} 2.0' in text
    assert f'echo_http_request_duration_seconds_bucket{{le="2.5",{series}}} 2.0' in text
    assert f'echo_http_request_duration_seconds_bucket{{le="+Inf",{series}}} 3.0' in text
    assert f'echo_http_request_duration_seconds_count{{{series}}} 3.0' in text
    assert f'echo_http_request_duration_seconds_sum{{{series}}} 3.021' in text
    assert 'echo_http_requests_total{method="POST",route="/api/x/{id}",status="429"} 1.0' in text
