"""Key scheme, filename sanitising, file_url parsing and the streamed multipart upload."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import TypedDict

import pytest
from api_support import LARGE_UPLOAD_BUCKET
from hypothesis import example, given
from hypothesis import strategies as st

from config import Settings
from storage.s3_client import S3Client, ensure_bucket
from storage.uploads import (
    MAX_FILENAME_CHARS,
    PresignedPost,
    UploadTooLarge,
    chunk_object_key,
    is_audio_content_type,
    key_from_file_url,
    sanitize_filename,
    stream_upload,
)


@given(st.text(max_size=400))
def test_a_sanitized_filename_is_safe_and_bounded(name: str) -> None:
    safe = sanitize_filename(name)
    assert 0 < len(safe) <= MAX_FILENAME_CHARS
    assert "/" not in safe and "\\" not in safe and ".." not in safe
    assert not safe.startswith(".")
    assert safe.isascii() and safe.isprintable()
    assert sanitize_filename(safe) == safe


@pytest.mark.parametrize("name, expected", [
    ("chunk-1.webm", "chunk-1.webm"),
    ("../../etc/passwd", "passwd"),
    ("C:\\Users\\x\\rec.wav", "rec.wav"),
    ("..", "chunk"),
    ("", "chunk"),
    ("opname café.ogg", "opname_cafe.ogg"),
    ("a" * 300 + ".webm", "a" * 95 + ".webm"),
    ("..%2F..%2Fsecret.mp4", "secret.mp4"),
])
def test_sanitize_examples(name: str, expected: str) -> None:
    assert sanitize_filename(name) == expected


@given(st.one_of(
    st.text(alphabet="aZ09._-/\\%2F\u00e9 ~", max_size=120),
    st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,110}", fullmatch=True),
))
@example("chunk-1.webm")
@example("a..b")
@example("x" * 101)
def test_the_shortcut_for_safe_names_agrees_with_every_step(name: str) -> None:
    from storage.uploads import _sanitize_steps

    assert sanitize_filename(name) == _sanitize_steps(name, MAX_FILENAME_CHARS)


def test_chunk_keys_follow_the_scheme() -> None:
    assert chunk_object_key("c", "k", "../a b.webm") == "conversation/c/chunks/k-a_b.webm"


def test_file_urls_name_keys() -> None:
    settings = Settings.from_env({"S3_ENDPOINT_URL": "http://s3.local:9000", "S3_BUCKET": "audio"})
    assert key_from_file_url(settings, "http://s3.local:9000/audio/conversation/c/x.webm") == "conversation/c/x.webm"
    assert key_from_file_url(settings, "conversation/c/x%20y.webm") == "conversation/c/x y.webm"
    assert key_from_file_url(settings, "http://[::1") is None


@pytest.mark.parametrize("value, ok", [
    ("audio/webm", True), ("audio/webm;codecs=opus", True), ("AUDIO/MP4", True),
    ("video/webm; codecs=\"opus\"", True), ("video/mp4", True), ("audio/x-wav", True),
    ("video/quicktime", False), ("text/plain", False), ("audio", False), ("", False),
    ("audio/webm;codecs=opus\nX-Evil: 1", False),
])
def test_audio_content_types(value: str, ok: bool) -> None:
    assert is_audio_content_type(value) is ok


async def _parts(size: int, step: int = 1024 * 1024) -> AsyncIterator[bytes]:
    sent = 0
    while sent < size:
        n = min(step, size - sent)
        yield bytes([sent % 251]) * n
        sent += n


@pytest.fixture
async def big_bucket(s3: S3Client) -> str:
    bucket: str = LARGE_UPLOAD_BUCKET
    await ensure_bucket(s3, bucket)
    return bucket


async def test_a_large_stream_becomes_a_multipart_upload(s3: S3Client, big_bucket: str) -> None:
    size = 11 * 1024 * 1024
    key = f"big-{uuid.uuid4()}.webm"
    total = await stream_upload(s3, bucket=big_bucket, key=key, content_type="audio/webm",
                                parts=_parts(size), max_bytes=size, part_bytes=5 * 1024 * 1024)
    assert total == size
    head = await s3.head_object(Bucket=big_bucket, Key=key)
    assert head["ContentLength"] == size and head["ContentType"] == "audio/webm"


async def test_a_stream_over_the_bound_is_aborted_and_leaves_no_object(s3: S3Client, big_bucket: str) -> None:
    key = f"too-big-{uuid.uuid4()}.webm"
    with pytest.raises(UploadTooLarge):
        await stream_upload(s3, bucket=big_bucket, key=key, content_type="audio/webm",
                            parts=_parts(12 * 1024 * 1024), max_bytes=11 * 1024 * 1024,
                            part_bytes=5 * 1024 * 1024)
    listed = await s3.list_objects_v2(Bucket=big_bucket, Prefix=key)
    assert [o["Key"] for o in listed.get("Contents", [])] == []
    uploads = await s3.list_multipart_uploads(Bucket=big_bucket, Prefix=key)
    assert uploads.get("Uploads", []) == []


async def test_the_bucket_cors_rules_admit_the_portal_origins(s3: S3Client, settings: Settings) -> None:
    from storage.uploads import apply_bucket_cors

    assert await apply_bucket_cors(s3, bucket=settings.s3_bucket, origins=[]) is False
    assert await apply_bucket_cors(s3, bucket=settings.s3_bucket, origins=["https://portal.example.org"])
    rules = (await s3.get_bucket_cors(Bucket=settings.s3_bucket))["CORSRules"]
    assert rules[0]["AllowedOrigins"] == ["https://portal.example.org"]
    assert {"POST", "PUT"} <= set(rules[0]["AllowedMethods"])


class _PostArgs(TypedDict):
    """What both presigners are asked for."""

    bucket: str
    key: str
    content_type: str
    max_bytes: int
    expires_s: int


async def _aiobotocore_presigned_post(
    client: S3Client, *, bucket: str, key: str, content_type: str, max_bytes: int, expires_s: int,
) -> PresignedPost:
    """The same presigned POST through aiobotocore's public API: the reference
    :class:`~storage.uploads.PostPresigner` must match."""
    post = await client.generate_presigned_post(
        Bucket=bucket,
        Key=key,
        Fields={"Content-Type": content_type},
        Conditions=[{"Content-Type": content_type}, ["content-length-range", 1, max_bytes]],
        ExpiresIn=expires_s,
    )
    return PresignedPost(url=post["url"], fields=dict(post["fields"]))


async def test_the_fast_presigner_signs_what_aiobotocore_signs(s3: S3Client, settings: Settings) -> None:
    """Same URL, same fields and same policy conditions as ``generate_presigned_post``."""
    import base64
    import json

    from storage.uploads import PostPresigner

    args: _PostArgs = {"bucket": settings.s3_bucket, "key": "conversation/c/chunks/k-a.webm",
                       "content_type": "audio/webm;codecs=opus", "max_bytes": 1000,
                       "expires_s": 900}
    fast = await PostPresigner(s3).presign(**args)
    reference = await _aiobotocore_presigned_post(s3, **args)
    assert fast.url == reference.url
    assert set(fast.fields) == set(reference.fields)

    def conditions(fields: dict[str, str]) -> list[str]:
        return sorted(json.dumps(c) for c in json.loads(base64.b64decode(fields["policy"]))["conditions"])

    assert conditions(fast.fields) == conditions(reference.fields)


async def test_the_fast_presigner_signs_the_same_policy_as_botocore_within_one_second(
    s3: S3Client, settings: Settings
) -> None:
    """Signed in the same second: the same fields and the same policy as aiobotocore's (ours
    is compact JSON), and the signature botocore's own signer computes over our policy."""
    import base64
    import json

    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest

    from storage.uploads import PostPresigner

    args: _PostArgs = {"bucket": settings.s3_bucket, "key": "conversation/c/chunks/k-a.webm",
                       "content_type": "audio/webm;codecs=opus", "max_bytes": 1000,
                       "expires_s": 900}
    presigner = PostPresigner(s3)
    for _ in range(5):  # a pair that straddles a second boundary is tried again
        fast = await presigner.presign(**args)
        reference = await _aiobotocore_presigned_post(s3, **args)
        if fast.fields["x-amz-date"] == reference.fields["x-amz-date"]:
            break
    signed = ("policy", "x-amz-signature")
    assert {k: v for k, v in fast.fields.items() if k not in signed} == {
        k: v for k, v in reference.fields.items() if k not in signed
    }
    assert json.loads(base64.b64decode(fast.fields["policy"])) == json.loads(
        base64.b64decode(reference.fields["policy"])
    )
    credentials = await s3._request_signer._credentials.get_frozen_credentials()
    request = AWSRequest(method="POST", url=fast.url)
    request.context["timestamp"] = fast.fields["x-amz-date"]
    botocore_signature = SigV4Auth(credentials, "s3", s3.meta.region_name).signature(
        fast.fields["policy"], request
    )
    assert fast.fields["x-amz-signature"] == botocore_signature
