"""The embedded local stack of ``echo-gateway dev``: private Redis and S3 in a data dir.

With ``REDIS_URL`` unset a private Redis (AOF persistence) is started in
``<data-dir>/redis``; with ``S3_ENDPOINT_URL`` unset a private SeaweedFS is
started in ``<data-dir>/s3`` and the bucket is created. Ports chosen once are
remembered in ``<data-dir>/ports.json`` and reused when free, so a restart of
``dev`` finds the same URLs and the same data.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import structlog
from botocore.exceptions import BotoCoreError, ClientError

from config import Secret, Settings
from devstack.servers import (
    RedisServer,
    SeaweedServer,
    ServerStartError,
    free_port,
    free_port_block,
    port_is_free,
)
from storage.s3_client import ensure_bucket, open_s3

log = structlog.get_logger(__name__)

BUCKET_READY_TIMEOUT_S = 30.0


def _remembered_ports(data_dir: Path) -> dict[str, int]:
    path = data_dir / "ports.json"
    try:
        return {k: int(v) for k, v in json.loads(path.read_text()).items()}
    except (OSError, ValueError, AttributeError):
        return {}


def _remember_ports(data_dir: Path, ports: dict[str, int]) -> None:
    (data_dir / "ports.json").write_text(json.dumps(ports))


def dev_redis_url(data_dir: Path) -> str | None:
    """The URL of the private Redis ``dev`` runs for ``data_dir`` (None: it never ran one)."""
    port = _remembered_ports(data_dir.resolve()).get("redis")
    return f"redis://127.0.0.1:{port}/0" if port else None


async def wait_for_bucket(settings: Settings, timeout_s: float = BUCKET_READY_TIMEOUT_S) -> None:
    """Create the bucket, retrying while a just-started S3 server warms up."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    async with open_s3(settings) as s3:
        while True:
            try:
                await ensure_bucket(s3, settings.s3_bucket)
                return
            except (ClientError, BotoCoreError, OSError) as exc:
                if asyncio.get_running_loop().time() > deadline:
                    raise ServerStartError(f"S3 bucket {settings.s3_bucket!r} not ready: {exc}") from exc
                await asyncio.sleep(0.2)


@asynccontextmanager
async def local_stack(settings: Settings, data_dir: Path) -> AsyncIterator[Settings]:
    """Start what ``settings`` leaves unset; yield settings that point at it; stop it on exit."""
    data_dir = data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    ports = _remembered_ports(data_dir)
    async with AsyncExitStack() as stack:
        if not settings.redis_url and not settings.redis_sentinels:
            port = ports.get("redis", 0)
            redis = RedisServer(
                data_dir / "redis", port=port if port and port_is_free(port) else free_port(),
                persistent=True,
            )
            await stack.enter_async_context(redis)
            ports["redis"] = redis.port
            settings = settings.replace(redis_url=redis.url)
            log.info("local_redis_started", url=redis.url, dir=str(redis.data_dir))
        if not settings.s3_endpoint_url:
            port = ports.get("s3", 0)
            reuse = port and all(port_is_free(p) for p in (port, port + 1, port + 2, port + 3, port + 4))
            seaweed = SeaweedServer(data_dir / "s3", s3_port=port if reuse else free_port_block(5))
            await stack.enter_async_context(seaweed)
            ports["s3"] = seaweed.s3_port
            settings = settings.replace(
                s3_endpoint_url=seaweed.endpoint_url,
                aws_access_key_id=Secret(seaweed.access_key),
                aws_secret_access_key=Secret(seaweed.secret_key),
            )
            log.info("local_s3_started", url=seaweed.endpoint_url, dir=str(seaweed.data_dir))
        _remember_ports(data_dir, ports)
        await wait_for_bucket(settings)
        yield settings
