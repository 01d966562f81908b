"""The pages as HTTP resources, and ``dev``'s first run: admin token and demo project kept in
the data dir, the pages' origin allowed, the lines it prints."""

from __future__ import annotations

import stat
from pathlib import Path

from api_support import ApiClient

from config import Secret, Settings
from gateway import first_run
from storage.conversations import ConversationStore
from storage.redis_client import RedisClient

PID = "6f1c2a39-0a39-4b49-9a55-2f6f3d7f0c11"


async def test_the_landing_participant_and_host_pages_are_html_and_their_scripts_are_served(
    client: ApiClient,
) -> None:
    for path in ("/", f"/p/{PID}", f"/host/{PID}"):
        resp = await client.get(path)
        assert resp.status == 200, path
        assert resp.content_type == "text/html"
        assert resp.headers["Cache-Control"] == "no-cache"
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
    for name in ("participant.js", "participant-net.js", "participant-chunks.js", "host.js",
                 "index.js", "style.css"):
        resp = await client.get(f"/static/{name}")
        assert resp.status == 200, name
    page = await (await client.get(f"/p/{PID}")).text()
    assert "/static/participant.js" in page and "https://" not in page, "no CDN"


async def test_a_page_of_a_malformed_project_id_is_a_json_400_and_no_demo_outside_dev(
    client: ApiClient,
) -> None:
    resp = await client.get("/p/not-a-uuid")
    assert resp.status == 400
    assert (await resp.json())["code"]
    resp = await client.get("/demo.json")
    assert resp.status == 404
    assert (await resp.json())["code"] == "no_demo_project"
    assert (await client.get("/static/../pages.py")).status in (403, 404)


async def test_first_run_makes_a_token_and_a_demo_project_once_and_keeps_them(
    tmp_path: Path, settings: Settings, redis: RedisClient,
) -> None:
    settings = settings.replace(admin_token=Secret(""), cors_allow_origins=("https://a.example",))
    first = await first_run.prepare(settings, tmp_path, host="127.0.0.1", port=8123)
    assert first.new_admin_token and first.settings.admin_token.reveal() == first.new_admin_token
    token_file = tmp_path / first_run.ADMIN_TOKEN_FILE
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert first.settings.cors_allow_origins == (
        "https://a.example", "http://127.0.0.1:8123", "http://localhost:8123",
    )
    project = await ConversationStore(redis).get_project(first.demo_project_id)
    assert project is not None and project["is_conversation_allowed"]

    again = await first_run.prepare(settings, tmp_path, host="127.0.0.1", port=8123)
    assert again.new_admin_token is None, "the token is printed once"
    assert again.settings.admin_token == first.settings.admin_token
    assert again.demo_project_id == first.demo_project_id
    text = first_run.announcement(again, host="127.0.0.1", port=8123, data_dir=tmp_path)
    assert f"http://127.0.0.1:8123/p/{first.demo_project_id}" in text
    assert f"http://127.0.0.1:8123/host/{first.demo_project_id}" in text
    assert "http://127.0.0.1:8123/api/openapi.json" in text
    assert first.new_admin_token not in text
    assert f"--data-dir {tmp_path.resolve()}" in text


async def test_first_run_keeps_an_admin_token_from_the_environment_and_remakes_a_lost_demo(
    tmp_path: Path, settings: Settings, redis: RedisClient,
) -> None:
    settings = settings.replace(admin_token=Secret("from-env"))
    first = await first_run.prepare(settings, tmp_path, host="0.0.0.0", port=8124)
    assert first.new_admin_token is None and first.admin_token_file is None
    assert first.settings.admin_token.reveal() == "from-env"
    assert not (tmp_path / first_run.ADMIN_TOKEN_FILE).exists()
    await redis.flushdb()  # the Redis data wiped, the data dir kept
    again = await first_run.prepare(settings, tmp_path, host="0.0.0.0", port=8124)
    assert again.demo_project_id != first.demo_project_id
    assert await ConversationStore(redis).get_project(again.demo_project_id) is not None
