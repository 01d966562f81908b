"""Audio objects in S3: key scheme, filename sanitising, presigned POST/PUT, HEAD, streaming upload.

Every chunk lives at ``conversation/{conversation_id}/chunks/{chunk_id}-{filename}``
with the filename reduced to a safe, bounded, normalised name. Browsers upload
straight to S3 with a presigned POST whose policy pins the key, the
``Content-Type`` and a ``content-length-range``, so S3 itself refuses anything
else. Presigned URLs are signed for the endpoint browsers reach
(``S3_PUBLIC_ENDPOINT_URL``, else ``S3_ENDPOINT_URL``).
"""

from __future__ import annotations

import base64
import hmac
import re
import time
import unicodedata
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple
from urllib.parse import unquote, urlsplit

import orjson
from botocore.exceptions import ClientError
from botocore.signers import _should_use_global_endpoint

from config import Settings
from storage.s3_client import S3Client

MAX_FILENAME_CHARS = 100
#: Parts of a streamed multipart upload (S3's minimum part size is 5 MiB).
MULTIPART_PART_BYTES = 8 * 1024 * 1024
PROBE_EXPIRES_S = 60
SIGV4_ALGORITHM = "AWS4-HMAC-SHA256"
#: botocore.auth.SIGV4_TIMESTAMP and ISO8601, for ``time.strftime``.
SIGV4_TIMESTAMP = "%Y%m%dT%H%M%SZ"
POLICY_EXPIRATION = "%Y-%m-%dT%H:%M:%SZ"

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
#: Names every step of :func:`sanitize_filename` leaves as they are (with no "..").
_ALREADY_SAFE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?\Z")
_AUDIO_TYPE = re.compile(
    r"^(audio/[a-z0-9][a-z0-9.+-]*|video/mp4|video/webm)(\s*;\s*[a-z0-9-]+=(\"[^\"]*\"|[a-z0-9._+-]+))*$",
    re.IGNORECASE,
)


def is_audio_content_type(value: str) -> bool:
    """An audio type (or video/mp4, video/webm, which browsers use for audio), parameters allowed."""
    return len(value) <= 200 and bool(_AUDIO_TYPE.match(value.strip()))


def sanitize_filename(name: str, *, max_chars: int = MAX_FILENAME_CHARS) -> str:
    """A safe object-name part: no separators or traversal, ASCII, normalised, bounded."""
    if len(name) <= max_chars and _ALREADY_SAFE.match(name) and ".." not in name:
        return name  # what the steps would return unchanged (the portal's names)
    return _sanitize_steps(name, max_chars)


def _sanitize_steps(name: str, max_chars: int) -> str:
    # Percent-encoded separators (multipart clients encode them) count as separators.
    name = unquote(name)
    name = unicodedata.normalize("NFKD", name)
    name = name.encode("ascii", "ignore").decode("ascii")
    name = re.split(r"[/\\]", name)[-1]
    name = _UNSAFE.sub("_", name).strip("._-")
    name = re.sub(r"\.{2,}", ".", name)
    if not name:
        return "chunk"
    if len(name) > max_chars:
        stem, dot, ext = name.rpartition(".")
        if dot and 0 < len(ext) <= 10:
            name = stem[: max_chars - len(ext) - 1].rstrip("._-") + "." + ext
        else:
            # Cut, then strip again: a cut name must not end in ".", "_" or "-" (it would
            # not be stable: sanitising it again would change it).
            name = name[:max_chars].rstrip("._-")
    return name


def chunk_object_key(conversation_id: str, chunk_id: str, filename: str) -> str:
    return f"conversation/{conversation_id}/chunks/{chunk_id}-{sanitize_filename(filename)}"


def probe_object_key(conversation_id: str) -> str:
    return f"conversation/{conversation_id}/probe"


def public_endpoint(settings: Settings) -> str:
    endpoint = settings.s3_public_endpoint_url or settings.s3_endpoint_url
    return endpoint or f"https://s3.{settings.s3_region}.amazonaws.com"


def object_url(settings: Settings, key: str) -> str:
    """The path-style URL that names ``key`` (the ``file_url`` of a chunk)."""
    return f"{public_endpoint(settings)}/{settings.s3_bucket}/{key}"


def key_from_file_url(settings: Settings, file_url: str) -> str | None:
    """The object key a ``file_url`` names (full URL, or the bare key), or None if unparseable."""
    if "://" not in file_url:
        return unquote(file_url).lstrip("/") or None
    try:
        path = unquote(urlsplit(file_url).path)
    except ValueError:
        return None
    path = path.lstrip("/")
    bucket_prefix = settings.s3_bucket + "/"
    if path.startswith(bucket_prefix):
        return path[len(bucket_prefix):]
    return path or None


class PresignedPost(NamedTuple):
    url: str
    fields: dict[str, str]


def _sigv4_signing_key(secret_key: str, day: str, region: str, service: str) -> bytes:
    """The SigV4 signing key of one day (AWS's published derivation, four chained HMACs)."""
    key = ("AWS4" + secret_key).encode()
    for part in (day, region, service, "aws4_request"):
        key = hmac.digest(key, part.encode(), "sha256")
    return key


class PostPresigner:
    """Presigned POSTs (AWS SigV4 POST policy), the bucket's URL resolved once, the key once a day.

    aiobotocore's ``generate_presigned_post`` resolves the endpoint ruleset and
    runs the client's event hooks on every call, then botocore's
    ``S3SigV4PostAuth`` builds a request object and derives the signing key
    (four HMACs): together several times the cost of the signature itself,
    which showed in the ``get-upload-url`` benchmark. This resolves the URL
    once per bucket with the client's own (private) steps, takes the client's
    credentials (refreshed by botocore when they are temporary ones), derives
    the signing key once a day, and signs the policy as AWS documents it
    (sigv4-HTTPPOSTConstructPolicy: base64 of the policy JSON, here compact
    JSON from orjson, HMAC-SHA256 with the day's key), with the conditions, in
    the same order, that ``generate_presigned_post`` writes.
    ``tests/test_uploads.py`` checks the fields and the decoded policy against
    aiobotocore's own and the signature against botocore's signer; SeaweedFS
    checks it in the upload tests.
    """

    def __init__(self, client: S3Client) -> None:
        self._client = client
        self._region: str = client.meta.region_name
        self._urls: dict[str, str] = {}
        #: (secret key, day) -> an HMAC keyed with that day's signing key, copied for each
        #: signature (cheaper than keying a new one); only the latest is kept.
        self._day_keys: dict[tuple[str, str], hmac.HMAC] = {}
        self._stamps: tuple[tuple[int, int], tuple[str, str]] = ((-1, -1), ("", ""))

    def _signing_key(self, secret_key: str, day: str) -> hmac.HMAC:
        key = self._day_keys.get((secret_key, day))
        if key is None:
            key = hmac.new(_sigv4_signing_key(secret_key, day, self._region, "s3"), digestmod="sha256")
            self._day_keys = {(secret_key, day): key}
        return key

    def _timestamps(self, now_s: int, expires_s: int) -> tuple[str, str]:
        """``x-amz-date`` of ``now_s`` and the policy's expiration, formatted once a second."""
        cached = self._stamps
        if cached[0] != (now_s, expires_s):
            cached = self._stamps = ((now_s, expires_s), (
                time.strftime(SIGV4_TIMESTAMP, time.gmtime(now_s)),
                time.strftime(POLICY_EXPIRATION, time.gmtime(now_s + expires_s)),
            ))
        return cached[1]

    async def _url(self, bucket: str) -> str:
        cached = self._urls.get(bucket)
        if cached is not None:
            return cached
        client = self._client
        context = {
            "is_presign_request": True,
            "use_global_endpoint": _should_use_global_endpoint(client),
        }
        operation_model = client.meta.service_model.operation_model("CreateBucket")
        params = await client._emit_api_params(
            api_params={"Bucket": bucket}, operation_model=operation_model, context=context
        )
        endpoint_url, headers, _ = await client._resolve_endpoint_ruleset(
            operation_model, params, context, ignore_signing_region=True
        )
        request_dict: dict[str, Any] = await client._convert_to_request_dict(
            api_params=params, operation_model=operation_model, endpoint_url=endpoint_url,
            context=context, headers=headers, set_user_agent_header=False,
        )
        url = str(request_dict["url"])
        self._urls[bucket] = url
        return url

    async def presign(
        self, *, bucket: str, key: str, content_type: str, max_bytes: int, expires_s: int
    ) -> PresignedPost:
        """A presigned POST for exactly ``key``, ``content_type`` and 1..``max_bytes`` bytes."""
        url = await self._url(bucket)
        credentials = await self._client._request_signer._credentials.get_frozen_credentials()
        now_s = int(time.time())
        amz_date, expiration = self._timestamps(now_s, expires_s)
        credential = f"{credentials.access_key}/{amz_date[:8]}/{self._region}/s3/aws4_request"
        fields = {"Content-Type": content_type, "key": key, "x-amz-algorithm": SIGV4_ALGORITHM,
                  "x-amz-credential": credential, "x-amz-date": amz_date}
        conditions: list[Any] = [
            {"Content-Type": content_type},
            ["content-length-range", 1, max_bytes],
            {"bucket": bucket},
            {"key": key},
            {"x-amz-algorithm": SIGV4_ALGORITHM},
            {"x-amz-credential": credential},
            {"x-amz-date": amz_date},
        ]
        if credentials.token is not None:
            fields["x-amz-security-token"] = credentials.token
            conditions.append({"x-amz-security-token": credentials.token})
        policy = {
            "expiration": expiration,
            "conditions": conditions,
        }
        fields["policy"] = base64.b64encode(orjson.dumps(policy)).decode()
        signer = self._signing_key(credentials.secret_key, amz_date[:8]).copy()
        signer.update(fields["policy"].encode())
        fields["x-amz-signature"] = signer.hexdigest()
        return PresignedPost(url=url, fields=fields)


async def presign_probe_put(presign_client: S3Client, *, bucket: str, key: str) -> str:
    """A presigned PUT (``Content-Type: text/plain``) valid for about a minute."""
    url: str = await presign_client.generate_presigned_url(
        "put_object",
        Params={"Bucket": bucket, "Key": key, "ContentType": "text/plain"},
        ExpiresIn=PROBE_EXPIRES_S,
    )
    return url


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    size: int
    content_type: str | None


async def head_object(s3: S3Client, *, bucket: str, key: str) -> ObjectInfo | None:
    """Size and type of ``key``, or None when it does not exist (yet)."""
    try:
        head = await s3.head_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code"))
        if code in ("404", "NoSuchKey", "NotFound"):
            return None
        raise
    return ObjectInfo(size=int(head.get("ContentLength", 0)), content_type=head.get("ContentType"))


def same_media_type(declared: str, stored: str | None) -> bool:
    """Compare the media types only (``audio/webm;codecs=opus`` matches ``audio/webm``)."""
    if stored is None:
        return False
    return declared.split(";")[0].strip().lower() == stored.split(";")[0].strip().lower()


class UploadTooLarge(Exception):
    """The streamed body went past the size bound; the partial upload was aborted."""


async def stream_upload(
    s3: S3Client, *, bucket: str, key: str, content_type: str,
    parts: AsyncIterator[bytes], max_bytes: int, part_bytes: int = MULTIPART_PART_BYTES,
) -> int:
    """Upload an async stream of bytes to ``key`` without holding more than one part in memory.

    A body smaller than one part is a single PUT; a larger one a multipart
    upload that is aborted on any error (so no half object is left). Returns
    the size; raises :class:`UploadTooLarge` past ``max_bytes``.
    """
    buffer = bytearray()
    total = 0
    upload_id: str | None = None
    etags: list[dict[str, Any]] = []
    try:
        async for data in parts:
            total += len(data)
            if total > max_bytes:
                raise UploadTooLarge(f"more than {max_bytes} bytes")
            buffer += data
            while len(buffer) >= part_bytes:
                if upload_id is None:
                    created = await s3.create_multipart_upload(
                        Bucket=bucket, Key=key, ContentType=content_type
                    )
                    upload_id = created["UploadId"]
                part, buffer = bytes(buffer[:part_bytes]), buffer[part_bytes:]
                number = len(etags) + 1
                result = await s3.upload_part(
                    Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=part
                )
                etags.append({"ETag": result["ETag"], "PartNumber": number})
        if upload_id is None:
            await s3.put_object(Bucket=bucket, Key=key, Body=bytes(buffer), ContentType=content_type)
            return total
        if buffer:
            number = len(etags) + 1
            result = await s3.upload_part(
                Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=bytes(buffer)
            )
            etags.append({"ETag": result["ETag"], "PartNumber": number})
        await s3.complete_multipart_upload(
            Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": etags}
        )
        return total
    except BaseException:
        if upload_id is not None:
            try:
                await s3.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
            except ClientError:
                pass
        raise


def bucket_cors_rules(origins: Sequence[str]) -> list[dict[str, Any]]:
    """CORS rules that let the portal's origins POST/PUT (preflighted) to presigned URLs."""
    return [{
        "AllowedOrigins": list(origins),
        "AllowedMethods": ["GET", "HEAD", "POST", "PUT"],
        "AllowedHeaders": ["*"],
        "ExposeHeaders": ["ETag", "Location"],
        "MaxAgeSeconds": 3000,
    }]


async def apply_bucket_cors(s3: S3Client, *, bucket: str, origins: Sequence[str]) -> bool:
    """Put the CORS rules on ``bucket``; returns False (doing nothing) with no origins."""
    if not origins:
        return False
    await s3.put_bucket_cors(Bucket=bucket, CORSConfiguration={"CORSRules": bucket_cors_rules(origins)})
    return True


async def apply_bucket_cors_from_settings(settings: Settings) -> bool:
    """What ``echo-gateway s3-cors`` runs: put ``CORS_ALLOW_ORIGINS`` on ``S3_BUCKET``."""
    from storage.s3_client import open_s3

    async with open_s3(settings) as s3:
        return await apply_bucket_cors(s3, bucket=settings.s3_bucket, origins=settings.cors_allow_origins)
