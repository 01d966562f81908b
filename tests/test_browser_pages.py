"""The participant and host pages in a real headless Chromium against the whole stack.

The gateway runs here as ``dev`` runs it (every consumer group in the process, the local
faster-whisper transcriber, the offline LLM) on the session's Redis and SeaweedFS; the
browser's fake microphone plays ``fixtures/speech/browser-microphone.wav`` ("We should
plant more trees in the city park", looped). Skipped only where Chromium is absent
(``apt-get install -y chromium``; ``.ci/run`` installs it).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
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

pytestmark = [
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
    """One bucket for the module: the session's SeaweedFS has room for few (``-volume.max``)."""
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


async def _project(stack: Stack, **fields: object) -> str:
    project = await stack.store.create_project({"name": "Browser test", **fields})
    return str(project["id"])


async def _open(browser: Chromium, url: str, ready: str) -> Page:
    page = await browser.open(url)
    await wait_until(lambda: page.evaluate(ready), timeout_s=30, interval_s=0.1,
                     message=f"{url} did not get ready", retry_on=(Exception,))
    return page


def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-z]+", text.lower()))


@pytest.mark.test_timeout(300)
async def test_a_recording_with_the_network_gone_midway_is_transcribed_and_shown_to_the_host(
    stack: Stack, browser: Chromium
) -> None:
    """Name asked, 3-second chunks recorded for about 8 s, the network taken away while one
    is made: it waits queued, goes once the network is back, and the page shows the spoken
    words; the host page lists the conversation with its transcript and auto-selects it."""
    pid = await _project(stack, default_conversation_ask_for_participant_name=True,
                         conversation_ask_for_participant_name_label="Who is speaking?")
    page = await _open(browser, f"{stack.base_url}/p/{pid}?chunk_seconds=3",
                       "document.body.dataset.ready === 'true'")
    assert await page.text("#name-label") == "Who is speaking?"
    await page.fill("#name-input", "Ada")
    await page.click("#name-submit")
    await page.click("#record")
    await wait_until(lambda: page.visible("#recording"), timeout_s=20, interval_s=0.1,
                     message="recording did not start")

    # The first chunk goes up while online.
    await wait_until(page.chunk_states, until=lambda s: any(
        x in ("uploaded", "pending_verification", "transcribed") for x in s),
        timeout_s=30, interval_s=0.1, message="the first chunk was not uploaded")
    await page.offline(True)
    states = await wait_until(page.chunk_states, until=lambda s: "queued" in s,
                              timeout_s=30, interval_s=0.1,
                              message="no chunk waited while offline")
    assert "offline" in await page.text("#network")
    assert "failed" not in states
    await page.offline(False)
    await wait_until(page.chunk_states, until=lambda s: len(s) >= 2 and "queued" not in s,
                     timeout_s=60, interval_s=0.1, message="the queued chunk did not go")
    await wait_until(lambda: page.evaluate("document.getElementById('elapsed').textContent"),
                     until=lambda t: t >= "0:08", timeout_s=30, interval_s=0.1,
                     message="recording did not reach 8 s")
    await page.click("#finish")

    transcript = await wait_until(
        lambda: page.text("#transcript"), until=lambda t: len(_words(t) & set(SPOKEN)) >= 3,
        timeout_s=TRANSCRIPT_DEADLINE_S, interval_s=0.5,
        message="the page did not show the spoken words",
    )
    await wait_until(lambda: page.evaluate("document.getElementById('result').dataset.finalized"),
                     until=lambda v: v == "true", timeout_s=TRANSCRIPT_DEADLINE_S, interval_s=0.5,
                     message="the page did not show the conversation finalized")
    states = await page.chunk_states()
    assert len(states) >= 3 and set(states) == {"transcribed"}, states

    conversations = await stack.store.list_conversations(pid)
    assert len(conversations) == 1
    conversation = conversations[0]
    assert conversation["participant_name"] == "Ada"
    assert conversation["is_finished"]
    chunks = await stack.store.list_chunks(conversation["id"])
    assert len(chunks) == len(states), "every chunk the page made arrived, and only once"

    host = await _open(browser, f"{stack.base_url}/host/{pid}",
                       "!document.getElementById('token-form').hidden")
    await host.fill("#token-input", ADMIN_TOKEN)
    await host.evaluate("document.getElementById('token-form').requestSubmit()")
    card = f"[data-conversation='{conversation['id']}']"
    host_transcript = await wait_until(
        lambda: host.text(f"{card} [data-field=transcript]"),
        until=lambda t: len(_words(t) & set(SPOKEN)) >= 3, timeout_s=30, interval_s=0.2,
        message="the host page did not list the conversation with its transcript",
    )
    assert _words(host_transcript) >= _words(transcript) & set(SPOKEN)
    assert await host.evaluate("sessionStorage.getItem('echo:admin-token')") == ADMIN_TOKEN
    stored = await host.evaluate("JSON.stringify({...localStorage})")
    assert ADMIN_TOKEN not in stored, "the token stays in the session"
    await host.fill("#auto-select-query", "planting trees in the park")
    await host.click("#auto-select-start")
    progress = await wait_until(
        lambda: host.text("#auto-select-result [data-field=progress]"),
        until=lambda t: t.startswith("completed"), timeout_s=60, interval_s=0.2,
        message="the auto-select job did not complete on the page",
    )
    assert re.fullmatch(r"completed: (\d+) of \1 batches done", progress), progress
    selected = await host.evaluate(
        "[...document.querySelectorAll('#auto-select-result li')].map((li) => li.dataset.conversation)"
    )
    assert selected == [conversation["id"]]

    # The stream backlog: the rows of GET /api/admin/streams, figure for figure.
    _, shown, after = await wait_until(
        lambda: _backlog_around_a_refresh(host, stack),
        until=lambda r: [_as_shown(row) for row in r[0]] == r[1] == [_as_shown(row) for row in r[2]],
        timeout_s=30, interval_s=0.5, message="the host page's backlog differs from the API's",
    )
    assert {(row["stream"], row["group"]) for row in shown} == {
        ("uploads", "upload-confirmation"), ("transcription", "transcription"), ("llm", "llm"),
    }
    [transcription] = [row for row in after if row["stream"] == "transcription"]
    assert int(str(transcription["length"])) >= len(chunks), "every chunk's event is counted"


BACKLOG_FIELDS = ("stream", "group", "length", "lag", "pending", "oldest_pending_age_s",
                  "consumers", "dead_letters", "delayed")


async def _admin_streams(stack: Stack) -> list[dict[str, object]]:
    async with aiohttp.ClientSession() as http, http.get(
        f"{stack.base_url}/api/admin/streams", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
    ) as resp:
        assert resp.status == 200, await resp.text()
        rows: list[dict[str, object]] = (await resp.json())["streams"]
        return rows


async def _backlog_around_a_refresh(
    host: Page, stack: Stack
) -> tuple[list[dict[str, object]], list[dict[str, str]], list[dict[str, object]]]:
    """The API's backlog rows just before and just after the host page reloads its own, and
    the page's table (each row: column -> text) in between."""
    before = await _admin_streams(stack)
    loaded = await host.evaluate("document.body.dataset.loaded")
    await host.click("#refresh")
    await wait_until(lambda: host.evaluate("document.body.dataset.loaded"),
                     until=lambda v: v != loaded, timeout_s=30, interval_s=0.1,
                     message="the host page did not reload")
    shown = await host.evaluate(
        "[...document.querySelectorAll('#streams tbody tr')].map((tr) =>"
        " Object.fromEntries([...tr.cells].map((td) => [td.dataset.field, td.textContent])))"
    )
    return before, shown, await _admin_streams(stack)


def _as_shown(row: dict[str, object]) -> dict[str, str]:
    """An API backlog row as the table shows it: numbers as JavaScript writes them, no lag
    for a stream without a group, and where the lag was counted rather than told by Redis."""
    def text(value: object) -> str:
        if value is None:
            return ""
        if isinstance(value, float) and value.is_integer():
            return str(int(value))
        return str(value)

    shown = {field: text(row[field]) for field in BACKLOG_FIELDS}
    if row["lag_source"] not in ("", "redis"):
        shown["lag"] += f" ({row['lag_source']})"
    return shown


def _drain(queue: asyncio.Queue[dict[str, Any]]) -> list[dict[str, Any]]:
    items = []
    while not queue.empty():
        items.append(queue.get_nowait())
    return items


@pytest.mark.test_timeout(150)
async def test_a_chunk_storage_shows_late_waits_pending_verification_then_is_transcribed(
    stack: Stack, browser: Chromium, s3: S3Client, env: dict[str, str]
) -> None:
    """S3 shows the first chunk's object only after the page confirms it (here: the object is
    taken away while the browser's POST answer is held, and put back once the page has shown
    the chunk): confirm-upload answers 202, the page shows "pending verification", and when
    the background verifier finds the object the chunk goes on to transcribed."""
    pid = await _project(stack)
    page = await _open(browser, f"{stack.base_url}/p/{pid}?chunk_seconds=2",
                       "document.body.dataset.ready === 'true'")
    bucket = env["S3_BUCKET"]
    responses = page.session.listen("Network.responseReceived")
    held = await page.pause_responses(f"{env['S3_ENDPOINT_URL']}/{bucket}*")
    await page.click("#record")
    while True:  # the upload probe (a PUT) goes through; the first chunk's POST is held
        await wait_until(held.qsize, until=lambda n: n > 0, timeout_s=30, interval_s=0.05,
                         message="the page sent nothing to S3")
        post = held.get_nowait()
        if post["request"]["method"] == "POST":
            break
        await page.release(post["requestId"])
    [conversation] = await stack.store.list_conversations(pid)
    listed = await s3.list_objects_v2(
        Bucket=bucket, Prefix=f"conversation/{conversation['id']}/chunks/"
    )
    [key] = [item["Key"] for item in listed["Contents"]]
    stored = await s3.get_object(Bucket=bucket, Key=key)
    body, content_type = await stored["Body"].read(), stored["ContentType"]
    await s3.delete_object(Bucket=bucket, Key=key)
    await page.release(post["requestId"], stop_pausing=True)

    await wait_until(page.chunk_states, until=lambda s: s[:1] == ["pending_verification"],
                     timeout_s=30, interval_s=0.1, message="the chunk was not shown pending")
    assert await page.text("#chunks li .state") == "pending verification"
    confirms = [r["response"]["status"] for r in _drain(responses)
                if r["response"]["url"].endswith("/confirm-upload")]
    assert confirms[:1] == [202], confirms
    [chunk] = [c for c in await stack.store.list_chunks(conversation["id"]) if c["path"] == key]
    assert chunk["status"] == "pending_verification"

    await s3.put_object(Bucket=bucket, Key=key, Body=body, ContentType=content_type)
    await page.click("#finish")
    states = await wait_until(page.chunk_states, until=lambda s: s and set(s) == {"transcribed"},
                              timeout_s=100, interval_s=0.2,
                              message="the chunks were not all transcribed")
    assert len(await stack.store.list_chunks(conversation["id"])) == len(states)


@pytest.mark.test_timeout(120)
@pytest.mark.parametrize("stack_overrides", [
    {"UPLOAD_URL_LIMIT_PER_WINDOW": "2", "UPLOAD_URL_LIMIT_WINDOW_S": "3"},
])
async def test_over_the_upload_url_limit_the_page_waits_retry_after_and_every_chunk_arrives(
    stack: Stack, browser: Chromium
) -> None:
    """1-second chunks against 2 upload URLs per 3 s: get-upload-url answers 429, the page
    waits as told, and every chunk arrives, none failed, none twice."""
    pid = await _project(stack)
    page = await _open(browser, f"{stack.base_url}/p/{pid}?chunk_seconds=1",
                       "document.body.dataset.ready === 'true'")
    await page.click("#record")
    await wait_until(page.chunk_states, until=lambda s: len(s) >= 6, timeout_s=30,
                     interval_s=0.1, message="six chunks were not recorded")
    await page.click("#finish")
    states = await wait_until(page.chunk_states, until=lambda s: s and all(
        x in ("uploaded", "pending_verification", "transcribed") for x in s),
        timeout_s=60, interval_s=0.2, message="not every chunk was sent")
    [conversation] = await stack.store.list_conversations(pid)
    assert len(await stack.store.list_chunks(conversation["id"])) == len(states)
    async with aiohttp.ClientSession() as http, http.get(f"{stack.base_url}/metrics") as resp:
        metrics = await resp.text()
    refused = [line for line in metrics.splitlines()
               if "get-upload-url" in line and 'status="429"' in line and "_total" in line]
    assert refused and float(refused[0].rsplit(" ", 1)[1]) >= 1, "the limit was reached"


@pytest.mark.test_timeout(120)
async def test_a_chunk_that_could_not_be_sent_survives_a_page_reload(
    stack: Stack, browser: Chromium
) -> None:
    """Uploads failing (as with no network), a recorded chunk waits in IndexedDB; the page is
    reloaded, lists it queued again, and sends it once uploads work."""
    pid = await _project(stack)
    page = await _open(browser, f"{stack.base_url}/p/{pid}?chunk_seconds=2",
                       "document.body.dataset.ready === 'true'")
    await page.click("#record")
    await wait_until(lambda: page.visible("#recording"), timeout_s=20, interval_s=0.1,
                     message="recording did not start")
    await page.block("*/api/participant/conversations/*")
    await wait_until(page.chunk_states, until=lambda s: "queued" in s, timeout_s=30,
                     interval_s=0.1, message="no chunk waited while uploads failed")
    await page.reload()
    await wait_until(lambda: page.evaluate("document.body.dataset.ready === 'true'"),
                     timeout_s=30, interval_s=0.1, message="the page did not load again",
                     retry_on=(Exception,))
    states = await wait_until(page.chunk_states, until=lambda s: "queued" in s, timeout_s=10,
                              interval_s=0.1, message="the kept chunk was not listed again")
    assert await page.text("#record") == "Continue recording"
    await page.block()
    await wait_until(page.chunk_states, until=lambda s: len(s) >= len(states) and all(
        x in ("uploaded", "pending_verification", "transcribed") for x in s),
        timeout_s=60, interval_s=0.2, message="the kept chunk was not sent")
    [conversation] = await stack.store.list_conversations(pid)
    assert len(await stack.store.list_chunks(conversation["id"])) == len(states)
    assert await page.evaluate(
        "new Promise((ok) => { const r = indexedDB.open('echo-participant', 1);"
        " r.onsuccess = () => { const q = r.result.transaction('chunks').objectStore('chunks')"
        ".count(); q.onsuccess = () => ok(q.result); }; })"
    ) == 0, "a sent chunk is no longer kept"


@pytest.mark.test_timeout(120)
async def test_with_the_microphone_denied_the_page_says_so_and_text_mode_works(
    stack: Stack,
) -> None:
    """A denied microphone gets a clear message and the text form; the text is the transcript."""
    pid = await _project(stack)
    async with Chromium(MICROPHONE, microphone_allowed=False) as browser:
        await browser.deny_microphone(stack.base_url)
        await _text_mode(browser, stack, pid)


async def _text_mode(browser: Chromium, stack: Stack, pid: str) -> None:
    page = await _open(browser, f"{stack.base_url}/p/{pid}", "document.body.dataset.ready === 'true'")
    assert not await page.visible("#name-form"), "this project asks for no name"
    await page.viewport(390, 844, mobile=True)
    assert await page.evaluate("document.documentElement.scrollWidth") <= 390, "fits a phone"
    unlabelled = await page.evaluate(
        "[...document.querySelectorAll('input, textarea, button')]"
        ".filter((e) => e.tagName === 'BUTTON' ? !e.textContent.trim() : !e.labels.length)"
        ".map((e) => e.id)"
    )
    assert unlabelled == [], "every control is labelled"
    await page.click("#record")
    await wait_until(lambda: page.visible("#text"), timeout_s=20, interval_s=0.1,
                     message="the text form was not offered")
    assert "denied" in await page.text("#message")

    # From here on by keyboard only: the text box has the focus, Tab reaches Send.
    assert await page.focused() == "text-input"
    await page.type_text("Bicycles need safer lanes downtown.")
    await page.press("Tab")
    assert await page.focused() == "text-send"
    await page.press("Enter")
    await wait_until(page.chunk_states, until=lambda s: s == ["transcribed"], timeout_s=20,
                     interval_s=0.1, message="the text was not listed as a transcribed part")
    await page.press("Tab")
    assert await page.focused() == "text-finish"
    await page.press("Space")
    await wait_until(lambda: page.text("#transcript"),
                     until=lambda t: "Bicycles need safer lanes downtown." in t, timeout_s=60,
                     interval_s=0.2, message="the text did not come back as the transcript")
    await wait_until(lambda: page.text("#summary"), until=lambda t: "Bicycles" in t,
                     timeout_s=60, interval_s=0.2, message="no summary was shown")
