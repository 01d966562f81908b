"""Every stuck item the sweeper finds is a warning log line with its ids and what was done, and
a Sentry event when Sentry is on: sent to a local endpoint that receives the envelopes."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from recovery_support import RECOVERY_OVERRIDES, make_sweeper
from structlog.testing import capture_logs
from transcription_support import conversation_with_chunks
from waiting import wait_until

from config import Settings
from storage.conversations import ConversationStore
from storage.redis_client import RedisClient
from storage.s3_client import S3Client

sentry_sdk = pytest.importorskip("sentry_sdk", reason="sentry-sdk (the sentry extra) is not installed")


pytestmark = pytest.mark.env(**RECOVERY_OVERRIDES)


@pytest.fixture(scope="module")
def bucket_name() -> str:
    return "test-recovery-alerts"


def _events(body: bytes) -> list[dict[str, Any]]:
    """The ``event`` items of one envelope: newline-separated JSON, header then item pairs
    (aiohttp has already undone the ``Content-Encoding``)."""
    lines = body.split(b"\n")
    found = []
    for header, payload in zip(lines[1::2], lines[2::2], strict=False):
        if json.loads(header).get("type") == "event":
            found.append(json.loads(payload))
    return found


async def test_a_stuck_item_is_logged_and_sent_to_sentry_with_what_was_done(
    settings: Settings, redis: RedisClient, s3: S3Client,
) -> None:
    received: list[dict[str, Any]] = []

    async def envelope(request: web.Request) -> web.Response:
        received.extend(_events(await request.read()))
        return web.json_response({})

    app = web.Application()
    app.router.add_post("/api/{project}/envelope/", envelope)
    async with TestServer(app, host="127.0.0.1") as server:
        sentry_sdk.init(
            dsn=f"http://public@127.0.0.1:{server.port}/1", default_integrations=False
        )
        try:
            store = ConversationStore(redis)
            cid, uploads = await conversation_with_chunks(store, s3, settings, 1)
            await s3.delete_object(Bucket=settings.s3_bucket, Key=uploads[0].key)
            await store.finish(cid)
            chunk_id = uploads[0].chunk_id
            sweeper = make_sweeper(settings, redis, s3)
            with capture_logs() as logs:
                await wait_until(sweeper.run_now, until=lambda r: r is not None and any(
                    i.chunk_id == chunk_id for i in r.items), timeout_s=30, interval_s=0.2)

            def chunk_events() -> list[dict[str, Any]]:
                return [e for e in received if e.get("tags", {}).get("chunk_id") == chunk_id]

            sent = await wait_until(chunk_events, until=bool, timeout_s=30, interval_s=0.05)
        finally:
            # close() flushes with blocking I/O to the server on this loop: off the loop.
            await asyncio.to_thread(sentry_sdk.get_client().close)
            sentry_sdk.get_global_scope().set_client(None)
            assert not sentry_sdk.is_initialized()
    lines = [e for e in logs if e["event"] == "stuck_work_found" and e["chunk_id"] == chunk_id]
    assert lines and lines[0]["log_level"] == "warning"
    assert lines[0]["conversation_id"] == cid
    assert lines[0]["actions"] == ["chunk_failed_upload_not_found"]
    event = sent[0]
    assert event["level"] == "warning"
    assert event["tags"]["conversation_id"] == cid and event["tags"]["stuck_kind"] == "chunk"
    assert event["contexts"]["stuck"]["actions"] == lines[0]["actions"]
    assert "chunk_failed_upload_not_found" in event["message"]
