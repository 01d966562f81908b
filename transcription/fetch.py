"""The chunk's object from S3 into a temporary file, streamed and bounded in size."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path, PurePosixPath
from typing import Any

import aiohttp
from botocore.exceptions import BotoCoreError, ClientError

from storage.s3_client import S3Client
from transcription.errors import AudioMissing, EmptyAudio, StorageUnavailable, TooLarge

READ_BYTES = 256 * 1024
#: What S3 (or the way to it) raises when it cannot serve the object for now: an error
#: answer, a connection or endpoint error, a timeout, a body cut off mid-read.
S3_ERRORS = (ClientError, BotoCoreError, aiohttp.ClientError, OSError, TimeoutError)
NOT_FOUND_CODES = ("404", "NoSuchKey", "NotFound")


def _suffix(key: str) -> str:
    """The key's extension (providers infer the format from the file name), at most 8 chars."""
    suffix = PurePosixPath(key).suffix
    return suffix if 1 < len(suffix) <= 8 and suffix[1:].isalnum() else ".audio"


def _unavailable(what: str, exc: BaseException) -> StorageUnavailable:
    return StorageUnavailable(f"S3 {what} failed: {type(exc).__name__}: {exc}")


async def _read_block(body: Any) -> bytes:
    try:
        return bytes(await body.read(READ_BYTES))
    except S3_ERRORS as exc:
        raise _unavailable("read of the object", exc) from exc


@contextlib.asynccontextmanager
async def fetched_object(
    s3: S3Client, *, bucket: str, key: str, max_bytes: int, tmp_dir: str | None = None
) -> AsyncIterator[Path]:
    """Download ``key`` into a temporary file (removed on exit) and yield its path.

    Raises :class:`AudioMissing` (no such object), :class:`TooLarge` (over
    ``max_bytes``, checked on the declared length and while reading) or
    :class:`EmptyAudio`, which are permanent; and :class:`StorageUnavailable`
    (transient) for any other S3 or network error, so the handler retries it
    over its window rather than spending its crash attempts on an outage.
    """
    try:
        response = await s3.get_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in NOT_FOUND_CODES:
            raise AudioMissing(f"the audio object {key} is not in the bucket") from None
        raise _unavailable("get_object", exc) from exc
    except S3_ERRORS as exc:
        raise _unavailable("get_object", exc) from exc
    body = response["Body"]
    with tempfile.TemporaryDirectory(prefix="echo-chunk-", dir=tmp_dir) as directory:
        path = Path(directory) / f"chunk{_suffix(key)}"
        try:
            declared = int(response.get("ContentLength") or 0)
            if declared > max_bytes:
                raise TooLarge(f"the audio is {declared} bytes, more than {max_bytes}")
            size = 0
            with path.open("wb") as out:
                while True:
                    block = await _read_block(body)
                    if not block:
                        break
                    size += len(block)
                    if size > max_bytes:
                        raise TooLarge(f"the audio is more than {max_bytes} bytes")
                    out.write(block)
        finally:
            body.close()
        if size == 0:
            raise EmptyAudio("the audio object is empty")
        yield path
