"""The participant and host pages together, in a real headless Chromium against the whole
stack (tests/browser_stack.py): a recording through a network outage, transcribed and shown
to the host, whose page lists it, auto-selects it and shows the streams' backlog as the API
reports it. The participant page alone: tests/test_browser_participant.py.
"""

from __future__ import annotations

import re

import aiohttp
import browser_stack
import pytest
from browser_stack import (
    ADMIN_TOKEN,
    SPOKEN,
    TRANSCRIPT_DEADLINE_S,
    Stack,
    new_project,
    open_page,
    words,
)
from browser_support import Chromium, Page
from waiting import wait_until

pytestmark = browser_stack.BROWSER_MARKS

bucket_name = browser_stack.bucket_name
stack_overrides = browser_stack.stack_overrides
stack = browser_stack.stack
browser = browser_stack.browser


@pytest.mark.test_timeout(300)
async def test_a_recording_with_the_network_gone_midway_is_transcribed_and_shown_to_the_host(
    stack: Stack, browser: Chromium
) -> None:
    """Name asked, 3-second chunks recorded for about 8 s, the network taken away while one
    is made: it waits queued, goes once the network is back, and the page shows the spoken
    words; the host page lists the conversation with its transcript and auto-selects it."""
    pid = await new_project(stack, default_conversation_ask_for_participant_name=True,
                         conversation_ask_for_participant_name_label="Who is speaking?")
    page = await open_page(browser, f"{stack.base_url}/p/{pid}?chunk_seconds=3",
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
        lambda: page.text("#transcript"), until=lambda t: len(words(t) & set(SPOKEN)) >= 3,
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

    host = await open_page(browser, f"{stack.base_url}/host/{pid}",
                       "!document.getElementById('token-form').hidden")
    await host.fill("#token-input", ADMIN_TOKEN)
    await host.evaluate("document.getElementById('token-form').requestSubmit()")
    card = f"[data-conversation='{conversation['id']}']"
    host_transcript = await wait_until(
        lambda: host.text(f"{card} [data-field=transcript]"),
        until=lambda t: len(words(t) & set(SPOKEN)) >= 3, timeout_s=30, interval_s=0.2,
        message="the host page did not list the conversation with its transcript",
    )
    assert words(host_transcript) >= words(transcript) & set(SPOKEN)
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
