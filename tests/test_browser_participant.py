"""The participant page alone, in a real headless Chromium against the whole stack
(tests/browser_stack.py): a chunk that storage shows late, the upload-URL limit, a chunk
kept across a reload, and text mode with the microphone denied, by keyboard.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import browser_stack
import pytest
from browser_stack import MICROPHONE, Stack, new_project, open_page
from browser_support import Chromium
from waiting import wait_until

from storage.s3_client import S3Client

pytestmark = browser_stack.BROWSER_MARKS

bucket_name = browser_stack.bucket_name
stack_overrides = browser_stack.stack_overrides
stack = browser_stack.stack
browser = browser_stack.browser


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
    pid = await new_project(stack)
    page = await open_page(browser, f"{stack.base_url}/p/{pid}?chunk_seconds=2",
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
    pid = await new_project(stack)
    page = await open_page(browser, f"{stack.base_url}/p/{pid}?chunk_seconds=1",
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
    pid = await new_project(stack)
    page = await open_page(browser, f"{stack.base_url}/p/{pid}?chunk_seconds=2",
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
    pid = await new_project(stack)
    async with Chromium(MICROPHONE, microphone_allowed=False) as browser:
        await browser.deny_microphone(stack.base_url)
        await _text_mode(browser, stack, pid)


async def _text_mode(browser: Chromium, stack: Stack, pid: str) -> None:
    page = await open_page(browser, f"{stack.base_url}/p/{pid}", "document.body.dataset.ready === 'true'")
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
