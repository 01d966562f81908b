"""The participant API against real Redis and real SeaweedFS, as the portal uses it."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest
from api_support import (
    HOST_HEADERS,
    ORIGIN,
    ApiClient,
    MakeClient,
    P,
    confirm,
    create_project,
    get_upload_url,
    initiate,
    new_id,
    open_conversation,
    post_to_s3,
    stream_events,
)
from waiting import wait_until

from storage.redis_client import RedisClient
from storage.s3_client import S3Client


async def test_the_portal_flow_from_project_to_finish(client: ApiClient, redis: RedisClient) -> None:
    project = await create_project(client, default_conversation_title="Say hi")
    pid = project["id"]

    resp = await client.get(f"{P}/projects/{pid}", headers={"Origin": ORIGIN})
    assert resp.status == 200
    assert resp.headers["Access-Control-Allow-Origin"] == ORIGIN
    public = await resp.json()
    assert public["id"] == pid and public["is_conversation_allowed"] is True
    assert [t["text"] for t in public["tags"]] == ["housing", "parks"]
    assert public["default_conversation_title"] == "Say hi"

    tag_id = public["tags"][0]["id"]
    conversation = await initiate(client, pid, tag_id_list=[tag_id], email="a@example.org")
    cid = conversation["id"]
    assert conversation["project_id"] == pid
    assert conversation["participant_name"] == "Alice"
    assert conversation["participant_email"] == "a@example.org"
    assert conversation["title"] == "Alice" and "description" in conversation

    resp = await client.post(f"{P}/conversations/{cid}/check-s3")
    probe_url = (await resp.json())["probe_url"]
    async with aiohttp.ClientSession() as http, http.put(
        probe_url, data=b"probe", headers={"Content-Type": "text/plain"}
    ) as put:
        assert put.status == 200

    grant = await get_upload_url(client, cid, filename="../../etc/passwd recording.webm")
    assert set(grant) >= {"chunk_id", "upload_url", "fields", "file_url"}
    key = grant["fields"]["key"]
    assert key == f"conversation/{cid}/chunks/{grant['chunk_id']}-passwd_recording.webm"
    assert grant["file_url"].endswith(key)
    # Nothing listed until confirmed: issued chunks are invisible.
    assert await (await client.get(f"{P}/projects/{pid}/conversations/{cid}/chunks")).json() == []

    s3_resp = await post_to_s3(grant, b"\x1a\x45\xdf\xa3" + b"a" * 4000)
    assert s3_resp.status == 204

    resp = await confirm(client, cid, grant)
    assert resp.status == 200
    assert await resp.json() == {"status": "confirmed", "chunk_id": grant["chunk_id"]}

    chunks = await (await client.get(f"{P}/projects/{pid}/conversations/{cid}/chunks")).json()
    assert [(c["id"], c["status"], c["path"]) for c in chunks] == [(grant["chunk_id"], "uploaded", key)]
    assert chunks[0]["timestamp"] == "2026-01-01T10:00:00.000Z" and chunks[0]["error"] is None

    events = await stream_events(redis, "transcription")
    assert [(e["type"], e["payload"]["chunk_id"]) for e in events] == [
        ("chunk.uploaded", grant["chunk_id"])
    ]

    resp = await client.post(f"{P}/conversations/{cid}/finish")
    assert resp.status == 200 and await resp.json() == "OK"
    resp = await client.post(f"{P}/conversations/{cid}/finish")
    assert resp.status == 200 and await resp.json() == "OK"
    conv = await (await client.get(f"{P}/projects/{pid}/conversations/{cid}")).json()
    assert conv["is_finished"] is True and conv["is_all_chunks_transcribed"] is False
    assert conv["summary"] is None


async def test_s3_itself_refuses_what_the_presigned_post_does_not_allow(make_client: MakeClient) -> None:
    client = await make_client(UPLOAD_MAX_BYTES="1024")
    _, conversation = await open_conversation(client)
    cid = conversation["id"]

    grant = await get_upload_url(client, cid)
    assert (await post_to_s3(grant, b"x" * 2048)).status in (400, 403)  # oversized

    wrong_type = {**grant["fields"], "Content-Type": "text/html"}
    assert (await post_to_s3(grant, b"x" * 10, fields=wrong_type)).status == 403

    tampered = dict(grant["fields"])
    signature = tampered["x-amz-signature"]
    tampered["x-amz-signature"] = ("0" if signature[0] != "0" else "1") + signature[1:]
    assert (await post_to_s3(grant, b"x" * 10, fields=tampered)).status == 403

    other_key = {**grant["fields"], "key": f"conversation/{cid}/chunks/elsewhere.webm"}
    assert (await post_to_s3(grant, b"x" * 10, fields=other_key)).status == 403


async def test_s3_refuses_an_expired_upload_url(make_client: MakeClient) -> None:
    import asyncio

    client = await make_client(UPLOAD_URL_EXPIRES_S="1")
    _, conversation = await open_conversation(client)
    grant = await get_upload_url(client, conversation["id"])
    await asyncio.sleep(2.5)  # the behaviour under test: the 1 s URL expires meanwhile

    async def refused() -> bool:
        response: aiohttp.ClientResponse = await post_to_s3(grant, b"x" * 10)
        return response.status == 403

    await wait_until(refused, timeout_s=27.5, interval_s=0.5,
                     message="S3 still takes the expired upload URL")


async def test_the_41st_upload_url_in_a_minute_is_a_429_with_retry_after(
    client: ApiClient, redis: RedisClient
) -> None:
    _, conversation = await open_conversation(client)
    cid = conversation["id"]
    for _ in range(40):
        await get_upload_url(client, cid)
    resp = await client.post(
        f"{P}/conversations/{cid}/get-upload-url",
        json={"filename": "a.webm", "content_type": "audio/webm"},
        headers={"Origin": ORIGIN},
    )
    assert resp.status == 429
    retry_after = int(resp.headers["Retry-After"])
    assert 1 <= retry_after <= 60
    assert resp.headers["RateLimit-Policy"] == '"upload-url";q=40;w=60'
    assert resp.headers["RateLimit"].startswith('"upload-url";r=0;t=')
    assert "Retry-After" in resp.headers["Access-Control-Expose-Headers"]
    body = await resp.json()
    assert isinstance(body["detail"], str) and body["code"] == "rate_limited"
    # Another conversation is not affected.
    _, other = await open_conversation(client)
    await get_upload_url(client, other["id"])


async def test_confirming_twice_makes_one_chunk(client: ApiClient, redis: RedisClient) -> None:
    project, conversation = await open_conversation(client)
    cid = conversation["id"]
    grant = await get_upload_url(client, cid)
    assert (await post_to_s3(grant, b"y" * 100)).status == 204
    first, second = await confirm(client, cid, grant), await confirm(client, cid, grant)
    assert first.status == second.status == 200
    assert await second.json() == {"status": "confirmed", "chunk_id": grant["chunk_id"]}
    chunks = await (await client.get(f"{P}/projects/{project['id']}/conversations/{cid}/chunks")).json()
    assert [c["id"] for c in chunks] == [grant["chunk_id"]]


async def test_an_upload_landing_after_finish_is_kept(client: ApiClient) -> None:
    """The last chunk's upload may finish after the participant pressed finish."""
    project, conversation = await open_conversation(client)
    cid = conversation["id"]
    assert (await client.post(f"{P}/conversations/{cid}/finish")).status == 200
    grant = await get_upload_url(client, cid)
    assert (await post_to_s3(grant, b"z" * 100)).status == 204
    assert (await confirm(client, cid, grant)).status == 200
    chunks = await (await client.get(f"{P}/projects/{project['id']}/conversations/{cid}/chunks")).json()
    assert [c["id"] for c in chunks] == [grant["chunk_id"]]


async def test_a_key_of_another_conversation_is_a_400(client: ApiClient) -> None:
    project, conversation = await open_conversation(client)
    other = await initiate(client, project["id"])
    mine = await get_upload_url(client, conversation["id"])
    theirs = await get_upload_url(client, other["id"])
    resp = await confirm(client, conversation["id"], mine, file_url=theirs["file_url"])
    assert resp.status == 400
    assert "file_url" in (await resp.json())["detail"]
    # A key inside this conversation but not the issued one is refused too.
    second = await get_upload_url(client, conversation["id"])
    resp = await confirm(client, conversation["id"], mine, file_url=second["file_url"])
    assert resp.status == 400


async def test_a_closed_project_refuses_writes_with_403_but_stays_readable(client: ApiClient) -> None:
    project, conversation = await open_conversation(client)
    pid, cid = project["id"], conversation["id"]
    grant = await get_upload_url(client, cid)
    resp = await client.patch(
        f"/api/host/projects/{pid}", json={"is_conversation_allowed": False}, headers=HOST_HEADERS
    )
    assert resp.status == 200
    for method, path, body in [
        ("POST", f"{P}/projects/{pid}/conversations/initiate", {"name": "Bob"}),
        ("POST", f"{P}/conversations/{cid}/get-upload-url", {"filename": "a.webm", "content_type": "audio/webm"}),
        ("POST", f"{P}/conversations/{cid}/confirm-upload", {
            "chunk_id": grant["chunk_id"], "file_url": grant["file_url"], "timestamp": "2026-01-01T00:00:00Z"}),
        ("POST", f"{P}/conversations/{cid}/upload-text", {"timestamp": "2026-01-01T00:00:00Z", "content": "hi"}),
        ("POST", f"{P}/conversations/{cid}/check-s3", None),
        ("POST", f"{P}/conversations/{cid}/finish", None),
    ]:
        resp = await client.request(method, path, json=body)
        assert resp.status == 403, path
        assert (await resp.json())["detail"] == "Conversation not open for participation"
    assert (await client.get(f"{P}/projects/{pid}")).status == 200
    assert (await client.get(f"{P}/projects/{pid}/conversations/{cid}")).status == 200
    assert (await client.get(f"{P}/projects/{pid}/conversations/{cid}/chunks")).status == 200


async def test_unknown_ids_are_404(client: ApiClient) -> None:
    project, conversation = await open_conversation(client)
    pid, cid = project["id"], conversation["id"]
    other_project = await create_project(client)
    grant = await get_upload_url(client, cid)
    unknown = new_id()
    cases = [
        ("GET", f"{P}/projects/{unknown}", None),
        ("POST", f"{P}/projects/{unknown}/conversations/initiate", {"name": "x"}),
        ("GET", f"{P}/projects/{pid}/conversations/{unknown}", None),
        ("GET", f"{P}/projects/{other_project['id']}/conversations/{cid}", None),
        ("GET", f"{P}/projects/{pid}/conversations/{unknown}/chunks", None),
        ("DELETE", f"{P}/projects/{pid}/conversations/{cid}/chunks/{unknown}", None),
        ("DELETE", f"{P}/projects/{pid}/conversations/{unknown}/chunks/{unknown}", None),
        ("POST", f"{P}/conversations/{unknown}/get-upload-url", {"filename": "a", "content_type": "audio/wav"}),
        ("POST", f"{P}/conversations/{unknown}/confirm-upload", {
            "chunk_id": grant["chunk_id"], "file_url": f"conversation/{unknown}/chunks/x",
            "timestamp": "2026-01-01T00:00:00Z"}),
        ("POST", f"{P}/conversations/{cid}/confirm-upload", {
            "chunk_id": unknown, "file_url": grant["file_url"], "timestamp": "2026-01-01T00:00:00Z"}),
        ("POST", f"{P}/conversations/{unknown}/upload-text", {"timestamp": "2026-01-01T00:00:00Z", "content": "x"}),
        ("POST", f"{P}/conversations/{unknown}/check-s3", None),
        ("POST", f"{P}/conversations/{unknown}/finish", None),
        ("POST", f"{P}/conversations/{unknown}/ping", {}),
        ("POST", f"{P}/projects/{unknown}/visitors/v1/ping", {}),
    ]
    for method, path, body in cases:
        resp = await client.request(method, path, json=body)
        assert resp.status == 404, (method, path, await resp.text())
        assert isinstance((await resp.json())["detail"], str)


async def test_upload_text_is_deduplicated_by_content_and_timestamp(client: ApiClient) -> None:
    project, conversation = await open_conversation(client)
    cid = conversation["id"]
    body = {"timestamp": "2026-01-01T10:00:00Z", "content": "I think the park needs benches."}
    first = await (await client.post(f"{P}/conversations/{cid}/upload-text", json=body)).json()
    again = await (await client.post(f"{P}/conversations/{cid}/upload-text", json=body)).json()
    later = await (await client.post(
        f"{P}/conversations/{cid}/upload-text", json={**body, "timestamp": "2026-01-01T10:01:00Z"}
    )).json()
    assert first["id"] == again["id"] != later["id"]
    assert first["transcript"] == body["content"] and first["source"] == "PORTAL_TEXT"
    chunks = await (await client.get(f"{P}/projects/{project['id']}/conversations/{cid}/chunks")).json()
    assert [c["id"] for c in chunks] == [first["id"], later["id"]]
    assert {c["status"] for c in chunks} == {"transcribed"}


async def test_a_chunk_can_be_deleted_once(client: ApiClient) -> None:
    project, conversation = await open_conversation(client)
    pid, cid = project["id"], conversation["id"]
    chunk = await (await client.post(f"{P}/conversations/{cid}/upload-text", json={
        "timestamp": "2026-01-01T10:00:00Z", "content": "hello"})).json()
    resp = await client.delete(f"{P}/projects/{pid}/conversations/{cid}/chunks/{chunk['id']}")
    assert resp.status == 200 and await resp.json() is None
    resp = await client.delete(f"{P}/projects/{pid}/conversations/{cid}/chunks/{chunk['id']}")
    assert resp.status == 404


async def test_pings_are_ok_and_ignore_bad_telemetry(client: ApiClient, redis: RedisClient) -> None:
    project, conversation = await open_conversation(client)
    cid = conversation["id"]
    for body in ({"state": "recording", "audio_level": 0.4}, {"state": ["weird"]}, None):
        resp = await client.post(f"{P}/conversations/{cid}/ping", json=body)
        assert resp.status == 200 and await resp.json() == {"ok": True}
    resp = await client.post(f"{P}/conversations/{cid}/ping", data=b"{not json",
                             headers={"Content-Type": "application/json"})
    assert resp.status == 200
    resp = await client.post(f"{P}/projects/{project['id']}/visitors/visitor-1/ping", json={"state": "idle"})
    assert resp.status == 200
    assert 0 < await redis.ttl(f"echo:{{c:{cid}}}:ping") <= 120


async def test_content_type_must_be_audio(client: ApiClient) -> None:
    _, conversation = await open_conversation(client)
    cid = conversation["id"]
    for ok in ("audio/webm", "audio/webm;codecs=opus", "audio/ogg; codecs=\"opus\"", "video/mp4", "audio/wav"):
        await get_upload_url(client, cid, content_type=ok)
    for bad in ("text/html", "video/x-msvideo", "audio/", "image/png", "audio/webm\r\nX: y"):
        resp = await client.post(f"{P}/conversations/{cid}/get-upload-url",
                                 json={"filename": "a.webm", "content_type": bad})
        assert resp.status == 400, bad


async def test_a_conversation_id_in_the_body_must_match_the_path(client: ApiClient) -> None:
    _, conversation = await open_conversation(client)
    resp = await client.post(f"{P}/conversations/{conversation['id']}/get-upload-url", json={
        "filename": "a.webm", "content_type": "audio/webm", "conversation_id": new_id()})
    assert resp.status == 400


async def test_unknown_tags_are_400(client: ApiClient) -> None:
    project = await create_project(client)
    resp = await client.post(f"{P}/projects/{project['id']}/conversations/initiate",
                             json={"name": "A", "tag_id_list": [new_id()]})
    assert resp.status == 400


@pytest.mark.slow
async def test_an_idle_conversation_is_finished_automatically(make_client: MakeClient) -> None:
    client = await make_client(IDLE_FINISH_AFTER_S="1")
    project, conversation = await open_conversation(client)
    url = f"{P}/projects/{project['id']}/conversations/{conversation['id']}"

    async def view() -> dict[str, Any]:
        return dict(await (await client.get(url)).json())

    await wait_until(view, until=lambda v: v["is_finished"], timeout_s=30, interval_s=0.2,
                     message="the idle conversation was not finished")
    assert (await view())["finish_reason"] == "idle"


async def test_conversation_starts_are_limited_per_client_ip(make_client: MakeClient) -> None:
    client = await make_client(INITIATE_LIMIT_PER_WINDOW="2", TRUSTED_PROXY_HOPS="1")
    project = await create_project(client)
    url = f"{P}/projects/{project['id']}/conversations/initiate"

    async def start(ip: str) -> aiohttp.ClientResponse:
        response: aiohttp.ClientResponse = await client.post(
            url, json={"name": "x"}, headers={"X-Forwarded-For": f"6.6.6.6, {ip}"}
        )
        return response

    assert [(await start("10.0.0.1")).status for _ in range(3)] == [200, 200, 429]
    assert (await start("10.0.0.2")).status == 200
    refused = await start("10.0.0.1")
    assert refused.headers["RateLimit-Policy"] == '"initiate";q=2;w=60'
    assert int(refused.headers["Retry-After"]) >= 1


async def test_the_idle_sweeper_logs_an_unexpected_error_and_keeps_sweeping(
    redis: RedisClient, s3: S3Client, api_env: dict[str, str]
) -> None:
    import asyncio
    import dataclasses

    from prometheus_client import CollectorRegistry
    from structlog.testing import capture_logs

    from config import Settings
    from gateway.api_services import ApiServices
    from gateway.idle_finish import idle_finish_loop
    from gateway.wiring import publisher_for
    from storage.conversations import ConversationStore

    class BrokenOnce(ConversationStore):
        sweeps = 0

        async def finish_idle(self, idle_s: float, **kwargs: Any) -> Any:
            self.sweeps += 1
            if self.sweeps == 1:
                raise RuntimeError("a bug in one sweep")
            return await super().finish_idle(idle_s, **kwargs)

    settings = Settings.from_env({**api_env, "IDLE_FINISH_AFTER_S": "1"})
    store = BrokenOnce(redis, key_prefix=settings.redis_key_prefix)
    services = dataclasses.replace(
        ApiServices.build(settings, redis, s3, s3, CollectorRegistry(),
                          publisher_for(redis, settings)),
        store=store,
    )
    stop = asyncio.Event()
    with capture_logs() as logs:
        task = asyncio.create_task(idle_finish_loop(services, stop))
        await wait_until(lambda: store.sweeps >= 2 or task.done(), timeout_s=10,
                         message="the sweeper did not sweep twice")
        assert store.sweeps >= 2, "the sweeper stopped"
        stop.set()
        await asyncio.wait_for(task, 5)
    failures = [e for e in logs if e["event"] == "idle_sweep_failed"]
    assert failures and failures[0]["log_level"] == "error" and failures[0].get("exc_info")
