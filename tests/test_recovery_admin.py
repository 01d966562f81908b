"""The admin recovery routes and CLI: a dry run of the sweeper, the manual recovery of one
conversation (idempotent), both behind the host token."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from api_support import HOST_HEADERS, ApiClient, new_id
from recovery_support import RECOVERY_OVERRIDES
from transcription_support import conversation_with_chunks
from waiting import wait_until

from config import Settings
from storage.conversations import ConversationStore
from storage.s3_client import S3Client

ROUTES = [("GET", "/api/admin/stuck"), ("POST", f"/api/admin/conversations/{new_id()}/recover")]


pytestmark = pytest.mark.env(**RECOVERY_OVERRIDES)


@pytest.fixture(scope="module")
def bucket_name() -> str:
    return "test-recovery-admin"


@pytest.mark.parametrize(("method", "path"), ROUTES)
@pytest.mark.parametrize("header", [None, "Bearer wrong-token", "Basic abc", "Bearer "])
async def test_admin_recovery_routes_refuse_a_missing_or_wrong_token(
    client: ApiClient, method: str, path: str, header: str | None
) -> None:
    headers = {"Authorization": header} if header is not None else {}
    resp = await client.request(method, path, headers=headers)
    assert resp.status == 401
    body = await resp.json()
    assert body["code"] == "unauthorized" and body["detail"]


async def test_stuck_is_a_dry_run_of_the_sweeper(
    client: ApiClient, settings: Settings, store: ConversationStore, s3: S3Client,
) -> None:
    cid, uploads = await conversation_with_chunks(store, s3, settings, 1)
    await store.finish(cid)

    async def stuck() -> dict[str, object]:
        resp = await client.get("/api/admin/stuck", headers=HOST_HEADERS)
        assert resp.status == 200
        return dict(await resp.json())

    report = await wait_until(stuck, until=lambda r: r["stuck_chunks"] == 1, timeout_s=30,
                              interval_s=0.2)
    assert report["dry_run"] and report["examined"] == 1 and report["stuck_conversations"] == 1
    assert [(i["kind"], i["chunk_id"], i["actions"]) for i in report["items"]] == [  # type: ignore[attr-defined]
        ("conversation", None, []), ("chunk", uploads[0].chunk_id, [])]
    chunk = await store.get_chunk(cid, uploads[0].chunk_id)
    assert chunk is not None and chunk["status"] == "uploaded"
    bad = await client.get("/api/admin/stuck?limit=0", headers=HOST_HEADERS)
    assert bad.status == 400 and (await bad.json())["code"] == "invalid_limit"


async def test_recover_re_drives_a_conversation_and_repeating_it_is_harmless(
    client: ApiClient, settings: Settings, store: ConversationStore, s3: S3Client,
) -> None:
    cid, uploads = await conversation_with_chunks(store, s3, settings, 1)
    await s3.delete_object(Bucket=settings.s3_bucket, Key=uploads[0].key)
    await store.finish(cid)
    path = f"/api/admin/conversations/{cid}/recover"
    first = await (await client.post(path, headers=HOST_HEADERS)).json()
    second = await (await client.post(path, headers=HOST_HEADERS)).json()
    assert sorted(first["actions"]) == ["chunk_failed_upload_not_found", "republished_finalize"]
    assert "chunk_failed_upload_not_found" not in second["actions"]
    assert first["open_chunks"] == second["open_chunks"] == 0
    chunk = await store.get_chunk(cid, uploads[0].chunk_id)
    assert chunk is not None and (chunk["status"], chunk["error"]) == ("failed", "upload not found")
    missing = await client.post(f"/api/admin/conversations/{new_id()}/recover", headers=HOST_HEADERS)
    assert missing.status == 404 and (await missing.json())["code"] == "conversation_not_found"
    bad = await client.post("/api/admin/conversations/not-a-uuid/recover", headers=HOST_HEADERS)
    assert bad.status == 400


def _run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # the test judges the exit status itself
        [sys.executable, "-m", "gateway.cli", *args], check=False,
        env={"PATH": os.environ["PATH"], **env}, capture_output=True, text=True, timeout=60,
    )


async def test_the_recover_command_sweeps_or_recovers_one_conversation(
    settings: Settings, api_env: dict[str, str], store: ConversationStore, s3: S3Client,
) -> None:
    cid, uploads = await conversation_with_chunks(store, s3, settings, 1)
    await s3.delete_object(Bucket=settings.s3_bucket, Key=uploads[0].key)
    await store.finish(cid)
    dry = _run_cli("recover", "--stuck", "--dry-run", env=api_env)
    assert dry.returncode == 0, dry.stderr
    assert json.loads(dry.stdout)["dry_run"] is True
    done = _run_cli("recover", "--conversation", cid, env=api_env)
    assert done.returncode == 0, done.stderr
    assert "chunk_failed_upload_not_found" in json.loads(done.stdout)["actions"]
    sweep = _run_cli("recover", "--stuck", env=api_env)
    assert sweep.returncode == 0, sweep.stderr
    assert json.loads(sweep.stdout)["examined"] == 1
    unknown = _run_cli("recover", "--conversation", new_id(), env=api_env)
    assert unknown.returncode == 1 and "no conversation" in unknown.stderr
    assert _run_cli("recover", env=api_env).returncode == 2
