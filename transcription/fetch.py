"""The chunk's object from S3 into a temporary file, streamed and bounded in size."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path, PurePosixPath

from botocore.exceptions import ClientError

from storage.s3_client import S3Client
from transcription.errors import AudioMissing, EmptyAudio, TooLarge

READ_BYTES = 256 * 1024


def _suffix(key: str) -> str:
    """The key's extension (providers infer the format from the file name), at most 8 chars."""
    suffix = PurePosixPath(key).suffix
    return suffix if 1 < len(suffix) <= 8 and suffix[1:].isalnum() else ".audio"


@contextlib.asynccontextmanager
async def fetched_object(
    s3: S3Client, *, bucket: str, key: str, max_bytes: int, tmp_dir: str | None = None
) -> AsyncIterator[Path]:
    """Download ``key`` into a temporary file (removed on exit) and yield its path.

    Raises :class:`AudioMissing` (no such object), :class:`TooLarge` (over
    ``max_bytes``, checked on the declared length and while reading) or
    :class:`EmptyAudio`; S3 and network errors propagate (transient).
    """
    try:
        response = await s3.get_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
            raise AudioMissing(f"the audio object {key} is not in the bucket") from None
        raise
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
                    block = await body.read(READ_BYTES)
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
