"""Regenerate ``docs/screenshots/``: the participant page recording and finished, and the host
page with a conversation and an auto-select result, at a phone and a desktop width.

    .venv/bin/python scripts/screenshots.py

Runs what ``echo-gateway dev`` runs (private Redis and SeaweedFS in a temporary data dir,
every consumer group, the local transcriber, the offline LLM) and drives Debian's headless
Chromium (``apt-get install -y chromium``) with the fake microphone of the browser tests.
"""

from __future__ import annotations

import asyncio
import base64
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from aiohttp import web
from browser_support import Chromium, Page
from waiting import wait_until

from config import Settings
from devstack.servers import free_port
from devstack.stack import local_stack
from gateway import first_run
from gateway.app import create_app
from gateway.consumers import worker_background
from gateway.lifecycle import llm_ctx
from storage.conversations import ConversationStore
from storage.redis_client import open_redis
from storage.s3_client import open_s3
from storage.uploads import apply_bucket_cors

OUT = ROOT / "docs" / "screenshots"
MICROPHONE = ROOT / "tests" / "fixtures" / "speech" / "browser-microphone.wav"
PHONE = (390, 844)
DESKTOP = (1280, 900)
TOKEN = "screenshot-admin-token"


async def shoot(page: Page, name: str, size: tuple[int, int]) -> None:
    await page.viewport(*size, mobile=size == PHONE)
    await asyncio.sleep(0.3)  # let the layout settle at the new width
    shot = await page.session.send("Page.captureScreenshot", format="png", captureBeyondViewport=True)
    (OUT / name).write_bytes(base64.b64decode(shot["data"]))
    print(f"{OUT / name}")


async def ready(page: Page, expression: str, timeout_s: float = 60) -> None:
    await wait_until(lambda: page.evaluate(expression), timeout_s=timeout_s, interval_s=0.2,
                     message=expression, retry_on=(Exception,))


async def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {"LOG_LEVEL": "warning", "ADMIN_TOKEN": TOKEN, "PATH": os.environ["PATH"]}
    with tempfile.TemporaryDirectory() as data_dir:
        async with local_stack(Settings.from_env(env), Path(data_dir)) as stack_settings:
            run = await first_run.prepare(stack_settings, Path(data_dir), host="127.0.0.1", port=port)
            settings = run.settings
            async with open_s3(settings) as s3:
                await apply_bucket_cors(s3, bucket=settings.s3_bucket, origins=settings.cors_allow_origins)
            async with open_redis(settings) as redis:
                store = ConversationStore(redis, key_prefix=settings.redis_key_prefix)
                pid = str((await store.create_project({
                    "name": "Neighbourhood consultation",
                    "default_conversation_title": "What should change in our neighbourhood?",
                    "default_conversation_description": "Talk for a minute; press Stop and finish when done.",
                    "default_conversation_finish_text": "Thank you for taking part.",
                }))["id"])
            app = create_app(settings, background=worker_background([], already=(llm_ctx,)))
            runner = web.AppRunner(app, access_log=None, shutdown_timeout=1)
            await runner.setup()
            try:
                await web.TCPSite(runner, "127.0.0.1", port).start()
                await screenshots(base, pid)
            finally:
                await runner.cleanup()


async def screenshots(base: str, pid: str) -> None:
    async with Chromium(MICROPHONE) as browser:
        page = await browser.open(f"{base}/p/{pid}?chunk_seconds=3")
        await page.viewport(*PHONE, mobile=True)
        await ready(page, "document.body.dataset.ready === 'true'")
        await page.click("#record")
        await ready(page, "document.querySelectorAll('#chunks li[data-state=transcribed]').length >= 2")
        await shoot(page, "participant-recording-phone.png", PHONE)
        await page.click("#finish")
        await ready(page, "document.getElementById('result').dataset.finalized === 'true'"
                          " && !document.querySelector('#summary .muted')", timeout_s=120)
        await shoot(page, "participant-finished-phone.png", PHONE)
        await shoot(page, "participant-finished-desktop.png", DESKTOP)

        host = await browser.open(f"{base}/host/{pid}")
        await ready(host, "!document.getElementById('token-form').hidden")
        await host.fill("#token-input", TOKEN)
        await host.evaluate("document.getElementById('token-form').requestSubmit()")
        await ready(host, "!!document.querySelector('[data-conversation] [data-field=transcript]')")
        await host.fill("#auto-select-query", "trees in the park")
        await host.click("#auto-select-start")
        await ready(host, "(document.getElementById('auto-select-result').dataset.status || '')"
                          " === 'completed'")
        await shoot(host, "host-desktop.png", DESKTOP)
        await shoot(host, "host-phone.png", PHONE)


if __name__ == "__main__":
    asyncio.run(main())
