"""The per-process S3 client (aiobotocore), owned by the caller's lifecycle.

TLS certificates are always verified: ``verify`` is either ``True`` (the
system bundle) or the CA file from ``S3_CA_FILE``. There is deliberately no
setting that turns verification off.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import ClientError

from config import S3Settings

S3Client = Any  # aiobotocore generates the client class at run time


def s3_config(settings: S3Settings) -> AioConfig:
    return AioConfig(
        signature_version="s3v4",
        # Path-style addressing works with AWS and with every S3-compatible server.
        s3={"addressing_style": "path"},
        connect_timeout=2,
        read_timeout=30,
        retries={"max_attempts": 3, "mode": "standard"},
        max_pool_connections=50,
    )


def client_kwargs(settings: S3Settings, *, endpoint_url: str | None = None) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "region_name": settings.s3_region,
        "endpoint_url": endpoint_url or settings.s3_endpoint_url,
        "config": s3_config(settings),
        "verify": settings.s3_ca_file or True,
    }
    if settings.aws_access_key_id:
        kwargs["aws_access_key_id"] = settings.aws_access_key_id.reveal()
        kwargs["aws_secret_access_key"] = settings.aws_secret_access_key.reveal()
    return kwargs


@asynccontextmanager
async def open_s3(
    settings: S3Settings, *, endpoint_url: str | None = None
) -> AsyncIterator[S3Client]:
    """Create the process's S3 client and close it on exit."""
    session = get_session()
    async with session.create_client("s3", **client_kwargs(settings, endpoint_url=endpoint_url)) as client:
        yield client


async def ensure_bucket(client: S3Client, bucket: str) -> bool:
    """Create ``bucket`` if it does not exist; return whether it was created."""
    try:
        await client.head_bucket(Bucket=bucket)
        return False
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") not in ("404", "NoSuchBucket", "NotFound"):
            raise
    try:
        await client.create_bucket(Bucket=bucket)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
            return False
        raise
    return True
