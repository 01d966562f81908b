"""The stack and the browser of the page tests (tests/test_browser_pages.py,
tests/test_browser_participant.py), in a real headless Chromium against the whole stack.

The gateway runs as ``dev`` runs it (every consumer group in the process, the local
faster-whisper transcriber, the offline LLM) on the session's Redis and SeaweedFS; the
browser's fake microphone plays ``fixtures/speech/browser-microphone.wav`` ("We should
plant more trees in the city park", looped). A test module binds the fixtures
(``bucket_name``, ``stack_overrides``, ``stack``, ``browser``) and its marks
(``BROWSER_MARKS``: skipped only where Chromium is absent).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp import web
from browser_support import CHROMIUM, Chromium, Page
from waiting import wait_until

from config import Settings
from devstack.servers import free_port
from gateway.app import create_app
from gateway.consumers import worker_background
from gateway.lifecycle import llm_ctx
from storage.conversations import ConversationStore
from storage.redis_client import RedisClient
from storage.s3_client import S3Client
from storage.uploads import apply_bucket_cors

BROWSER_MARKS = [
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"Chromium is absent ({CHROMIUM}); "
                       "apt-get install -y chromium"),
    pytest.mark.slow,
]

MICROPHONE = Path(__file__).parent / "fixtures" / "speech" / "browser-microphone.wav"
SPOKEN = ("plant", "trees", "city", "park")
ADMIN_TOKEN = "browser-test-admin-token"
TRANSCRIPT_DEADLINE_S = 150.0


@pytest.fixture(scope="module")
def bucket_name() -> str:
    """One bucket for each module, the same name for all: the session's SeaweedFS has room for
    few (``-volume.max``)."""
    return "test-browser-pages"


@dataclass
class Stack:
    base_url: str
    store: ConversationStore


@pytest.fixture
def stack_overrides() -> dict[str, str]:
    """Extra settings of the stack (a test parametrizes this to change them)."""
    return {}


@pytest.fixture
async def stack(
    env: dict[str, str], redis: RedisClient, s3: S3Client, stack_overrides: dict[str, str]
) -> AsyncIterator[Stack]:
    """The gateway with every consumer group, served on a free port, as ``dev`` runs it."""
    port = free_port()
    origin = f"http://127.0.0.1:{port}"
    settings = Settings.from_env({
        **env, "CORS_ALLOW_ORIGINS": origin, "ADMIN_TOKEN": ADMIN_TOKEN, "TRANSCRIBER": "local",
        "STREAM_LEASE_S": "5", "SHUTDOWN_GRACE_S": "1", **stack_overrides,
    })
    await apply_bucket_cors(s3, bucket=settings.s3_bucket, origins=settings.cors_allow_origins)
    app = create_app(settings, background=worker_background([], already=(llm_ctx,)))
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", port).start()
        yield Stack(origin, ConversationStore(redis))
    finally:
        await runner.cleanup()


@pytest.fixture
async def browser() -> AsyncIterator[Chromium]:
    async with Chromium(MICROPHONE) as chromium:
        yield chromium


async def new_project(stack: Stack, **fields: object) -> str:
    project = await stack.store.create_project({"name": "Browser test", **fields})
    return str(project["id"])


async def open_page(browser: Chromium, url: str, ready: str) -> Page:
    page = await browser.open(url)
    await wait_until(lambda: page.evaluate(ready), timeout_s=30, interval_s=0.1,
                     message=f"{url} did not get ready", retry_on=(Exception,))
    return page


def words(text: str) -> set[str]:
    return set(re.findall(r"[a-z]+", text.lower()))
