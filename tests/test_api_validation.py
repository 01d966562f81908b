"""Bad input is a 400 (or 413) with a JSON ``detail`` string; no input produces a 500."""

from __future__ import annotations

import io
import itertools
from typing import Any

from api_support import (
    HOST_HEADERS,
    LARGE_UPLOAD_BUCKET,
    ApiClient,
    MakeClient,
    P,
    confirm,
    get_upload_url,
    open_conversation,
)

from devstack.servers import free_port

WEIRD_VALUES: list[Any] = [
    None, True, 0, -1, 1.5, 10**30, "", " ", "x" * 5000, "not-a-uuid", "../../x", "\u0000",
    [], [1, 2], {}, {"a": {"b": []}}, "2026-13-45T99:99:99Z",
    "\ud800 lone surrogate", "caf\u00e9 \U0001f3a4",
]


async def _assert_json_error(resp: Any, statuses: tuple[int, ...] = (400,)) -> None:
    assert resp.status in statuses, (resp.status, await resp.text())
    body = await resp.json()
    assert isinstance(body["detail"], str) and body["detail"]


async def test_malformed_json_missing_fields_and_wrong_types_are_400(client: ApiClient) -> None:
    _, conversation = await open_conversation(client)
    cid = conversation["id"]
    url = f"{P}/conversations/{cid}/get-upload-url"
    for raw in (b"{", b"[]", b'"text"', b"null", b"", b"{\"filename\": }", b"\xff\xfe"):
        resp = await client.post(url, data=raw, headers={"Content-Type": "application/json"})
        await _assert_json_error(resp)
    await _assert_json_error(await client.post(url, json={"filename": "a.webm"}))
    await _assert_json_error(await client.post(url, json={"filename": 3, "content_type": "audio/webm"}))
    resp = await client.post(f"{P}/conversations/{cid}/confirm-upload", json={
        "chunk_id": "nope", "file_url": "x", "timestamp": "2026-01-01T00:00:00Z"})
    await _assert_json_error(resp)
    assert "chunk_id" in (await resp.json())["detail"]
    resp = await client.post(f"{P}/conversations/{cid}/upload-text", json={
        "timestamp": "yesterday", "content": "hi"})
    await _assert_json_error(resp)
    await _assert_json_error(await client.get(f"{P}/projects/not-a-uuid"))


async def test_huge_bodies_are_413_with_a_json_body(client: ApiClient) -> None:
    _, conversation = await open_conversation(client)
    cid = conversation["id"]
    huge = b'{"filename": "' + b"a" * (2 * 1024 * 1024) + b'"}'
    resp = await client.post(f"{P}/conversations/{cid}/get-upload-url", data=io.BytesIO(huge),
                             headers={"Content-Type": "application/json"})
    await _assert_json_error(resp, (413,))


async def test_no_combination_of_odd_field_values_produces_a_500(client: ApiClient) -> None:
    project, conversation = await open_conversation(client)
    pid, cid = project["id"], conversation["id"]
    grant = await get_upload_url(client, cid)
    routes = {
        f"{P}/projects/{pid}/conversations/initiate": ["name", "email", "tag_id_list", "source", "visitor_id"],
        f"{P}/conversations/{cid}/get-upload-url": ["filename", "content_type", "conversation_id"],
        f"{P}/conversations/{cid}/confirm-upload": ["chunk_id", "file_url", "timestamp", "source"],
        f"{P}/conversations/{cid}/upload-text": ["timestamp", "content", "source"],
        f"{P}/conversations/{cid}/ping": ["state", "audio_level", "network"],
        "/api/host/projects": ["name", "language", "tags", "is_conversation_allowed"],
    }
    valid = {
        "name": "A", "filename": "a.webm", "content_type": "audio/webm", "chunk_id": grant["chunk_id"],
        "file_url": grant["file_url"], "timestamp": "2026-01-01T00:00:00Z", "content": "hello",
    }
    statuses = set()
    for path, fields in routes.items():
        for field, value in itertools.product(fields, WEIRD_VALUES):
            body = {f: valid[f] for f in fields if f in valid}
            body[field] = value
            resp = await client.post(path, json=body, headers=HOST_HEADERS)
            statuses.add(resp.status)
            assert resp.status < 500, (path, field, value, await resp.text())
            if resp.status >= 400:
                assert isinstance((await resp.json())["detail"], str)
    assert 400 in statuses


async def test_upload_chunk_streams_a_legacy_upload_to_s3(make_client: MakeClient, s3: Any) -> None:
    import aiohttp

    from storage.s3_client import ensure_bucket

    await ensure_bucket(s3, LARGE_UPLOAD_BUCKET)
    client = await make_client(S3_BUCKET=LARGE_UPLOAD_BUCKET)
    _, conversation = await open_conversation(client)
    cid = conversation["id"]
    audio = bytes(range(256)) * (9 * 1024 * 4 + 7)  # ~9 MiB: a multipart upload of two parts
    form = aiohttp.FormData()
    form.add_field("timestamp", "2026-01-01T10:00:00Z")
    form.add_field("source", "PORTAL_AUDIO")
    form.add_field("chunk", io.BytesIO(audio), filename="../rec.wav", content_type="audio/wav")
    resp = await client.post(f"{P}/conversations/{cid}/upload-chunk", data=form)
    assert resp.status == 200, await resp.text()
    chunk = await resp.json()
    assert chunk["status"] == "uploaded" and chunk["size"] == len(audio)
    assert chunk["path"] == f"conversation/{cid}/chunks/{chunk['id']}-rec.wav"
    head = await s3.head_object(Bucket=LARGE_UPLOAD_BUCKET, Key=chunk["path"])
    assert head["ContentLength"] == len(audio)


async def test_upload_chunk_refuses_an_oversized_file_with_413(make_client: MakeClient) -> None:
    import aiohttp

    client = await make_client(UPLOAD_MAX_BYTES="1000")
    _, conversation = await open_conversation(client)
    form = aiohttp.FormData()
    form.add_field("chunk", b"x" * 5000, filename="a.wav", content_type="audio/wav")
    resp = await client.post(f"{P}/conversations/{conversation['id']}/upload-chunk", data=form)
    await _assert_json_error(resp, (413,))



async def test_confirm_with_s3_unreachable_is_a_202_not_an_error(make_client: MakeClient) -> None:
    """A failing S3 only means "not visible yet": the background check takes over."""
    client = await make_client(S3_ENDPOINT_URL=f"http://127.0.0.1:{free_port()}")
    _, conversation = await open_conversation(client)
    cid = conversation["id"]
    grant = await get_upload_url(client, cid)  # presigning needs no network
    resp = await confirm(client, cid, grant)
    assert resp.status == 202, await resp.text()
    assert (await resp.json())["status"] == "pending_verification"


def test_hot_path_ids_are_canonical_random_version_4_uuids() -> None:
    import uuid as uuid_module

    from gateway.ids import new_request_id, new_uuid4

    ids = [new_uuid4() for _ in range(10_000)]
    assert len(set(ids)) == len(ids)
    for value in ids:
        parsed = uuid_module.UUID(value)
        assert str(parsed) == value and parsed.version == 4
        assert parsed.variant == uuid_module.RFC_4122
    assert all(len(r) == 32 and int(r, 16) >= 0 for r in (new_request_id() for _ in range(100)))
