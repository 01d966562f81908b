"""Security of the presigned URLs, as the real S3 server (SeaweedFS) judges them.

A presigned POST writes one object: its key, its declared content type, 1 to
``UPLOAD_MAX_BYTES`` bytes, in its bucket. Any edit of a field, of the policy or of
the target is refused by S3 itself, and leaves nothing behind. The probe PUT likewise
writes only its key with ``text/plain``.

(The bucket's CORS rules are not checked here: SeaweedFS answers every origin with its
server-wide ``-s3.allowedOrigins``, default ``*``, whatever the bucket's rules say;
``tests/test_uploads.py`` checks the rules that are put on the bucket.)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import aiohttp
import pytest
from api_support import (
    ApiClient,
    MakeClient,
    get_upload_url,
    initiate,
    open_conversation,
    post_to_s3,
)

from config import Settings
from gateway.appkeys import SETTINGS
from storage.s3_client import S3Client, open_s3

MAX_BYTES = 1024
#: What S3 answers a POST whose policy or signature does not allow it.
REFUSED = (400, 403)


@pytest.fixture
async def small_client(make_client: MakeClient) -> ApiClient:
    return await make_client(UPLOAD_MAX_BYTES=str(MAX_BYTES))


async def _keys(settings: Settings, prefix: str = "") -> list[str]:
    async with open_s3(settings) as s3:
        listed = await s3.list_objects_v2(Bucket=settings.s3_bucket, Prefix=prefix)
    return sorted(str(o["Key"]) for o in listed.get("Contents", []))


def _edit(grant: Mapping[str, Any], **fields: str) -> dict[str, str]:
    return {**grant["fields"], **fields}


async def test_a_presigned_post_writes_its_key_and_nothing_else(small_client: ApiClient) -> None:
    settings = small_client.app[SETTINGS]
    project, conversation = await open_conversation(small_client)
    cid = conversation["id"]
    other = await initiate(small_client, project["id"])
    grant = await get_upload_url(small_client, cid)
    key = grant["fields"]["key"]
    others = [
        f"conversation/{other['id']}/chunks/{grant['chunk_id']}-chunk-1.webm",  # another conv.
        f"conversation/{cid}/chunks/{grant['chunk_id']}-other.webm",  # another name
        key + ".html",  # a suffix
        key[:-5],  # a prefix
        key + "/../../../" + other["id"] + "/x.webm",  # traversal
        key.upper(),
        f"conversation/{cid}/chunks/${{filename}}",  # S3's filename substitution
        f"conversation/{cid}/probe",
        "index.html",
    ]
    for target in others:
        response = await post_to_s3(grant, b"x" * 10, fields=_edit(grant, key=target))
        assert response.status in REFUSED, target

    assert (await post_to_s3(grant, b"x" * 10)).status == 204
    assert await _keys(settings) == [key]


async def test_a_presigned_post_is_bounded_in_size(small_client: ApiClient) -> None:
    settings = small_client.app[SETTINGS]
    _, conversation = await open_conversation(small_client)
    grant = await get_upload_url(small_client, conversation["id"])
    assert (await post_to_s3(grant, b"x" * (MAX_BYTES + 1))).status in REFUSED
    assert (await post_to_s3(grant, b"")).status in REFUSED
    assert await _keys(settings) == []
    assert (await post_to_s3(grant, b"x" * MAX_BYTES)).status == 204


async def test_a_presigned_post_is_bounded_to_its_content_type(small_client: ApiClient) -> None:
    settings = small_client.app[SETTINGS]
    _, conversation = await open_conversation(small_client)
    grant = await get_upload_url(small_client, conversation["id"], content_type="audio/webm;codecs=opus")
    for content_type in ("text/html", "audio/webm", "audio/ogg;codecs=opus",
                         "audio/webm;codecs=opus, text/html", "image/svg+xml"):
        fields = _edit(grant, **{"Content-Type": content_type})
        response = await post_to_s3(grant, b"x" * 10, fields=fields, content_type=content_type)
        assert response.status in REFUSED, content_type
    assert await _keys(settings) == []


async def test_an_edited_policy_or_signature_or_bucket_is_refused(
    small_client: ApiClient, s3: S3Client
) -> None:
    import base64
    import json

    settings = small_client.app[SETTINGS]
    _, conversation = await open_conversation(small_client)
    grant = await get_upload_url(small_client, conversation["id"])
    policy = json.loads(base64.b64decode(grant["fields"]["policy"]))
    for condition in policy["conditions"]:
        if isinstance(condition, list) and condition[0] == "content-length-range":
            condition[2] = 10**9  # a larger upload, under the original signature
    bigger = base64.b64encode(json.dumps(policy).encode()).decode()
    assert (await post_to_s3(grant, b"x" * (MAX_BYTES + 1),
                             fields=_edit(grant, policy=bigger))).status in REFUSED

    signature = grant["fields"]["x-amz-signature"]
    flipped = ("0" if signature[0] != "0" else "1") + signature[1:]
    assert (await post_to_s3(grant, b"x", fields=_edit(grant, **{"x-amz-signature": flipped}))
            ).status in REFUSED
    unsigned = {k: v for k, v in grant["fields"].items() if k != "x-amz-signature"}
    assert (await post_to_s3(grant, b"x", fields=unsigned)).status in REFUSED

    # The same fields posted to another bucket of the same server.
    other_bucket = settings.s3_bucket + "-other"
    await s3.create_bucket(Bucket=other_bucket)
    elsewhere = {**grant, "upload_url": grant["upload_url"].rstrip("/").rsplit("/", 1)[0]
                 + "/" + other_bucket}
    assert (await post_to_s3(elsewhere, b"x")).status in REFUSED
    assert "Contents" not in await s3.list_objects_v2(Bucket=other_bucket)
    assert await _keys(settings) == []


async def test_the_probe_put_writes_only_its_key_as_text(client: ApiClient) -> None:
    settings = client.app[SETTINGS]
    _, conversation = await open_conversation(client)
    cid = conversation["id"]
    resp = await client.post(f"/api/participant/conversations/{cid}/check-s3")
    probe_url = (await resp.json())["probe_url"]
    async with aiohttp.ClientSession() as http:
        async with http.put(probe_url, data=b"<script>", headers={"Content-Type": "text/html"}) as r:
            assert r.status in REFUSED
        moved = probe_url.replace(f"conversation/{cid}/probe", f"conversation/{cid}/chunks/x.webm")
        async with http.put(moved, data=b"x", headers={"Content-Type": "text/plain"}) as r:
            assert r.status in REFUSED
        assert await _keys(settings) == []
        async with http.put(probe_url, data=b"probe", headers={"Content-Type": "text/plain"}) as r:
            assert r.status == 200
    assert await _keys(settings) == [f"conversation/{cid}/probe"]
