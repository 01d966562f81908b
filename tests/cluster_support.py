"""A private 3-master Redis Cluster for one test (``async with redis_cluster(tmp_path)``)."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError
from waiting import wait_until

from config import Settings
from devstack.servers import RedisServer, free_port_block
from storage.redis_client import open_redis


@contextlib.asynccontextmanager
async def redis_cluster(tmp_path: Path) -> AsyncIterator[str]:
    """Start three cluster-enabled servers, join them, wait for ``cluster_state:ok``; yields
    the URL of one node (``REDIS_CLUSTER=true`` finds the others)."""
    servers = [
        # The cluster bus listens on port + 10000, so the block must leave room for it.
        RedisServer(tmp_path / f"node{i}", port=free_port_block(1), extra_args=(
            "--cluster-enabled", "yes", "--cluster-config-file", str(tmp_path / f"nodes{i}.conf"),
            "--cluster-node-timeout", "2000",
        ))
        for i in range(3)
    ]
    try:
        for server in servers:
            await server.start()
        # In a thread: subprocess.run keeps its timeout (and kills redis-cli at it).
        await asyncio.to_thread(
            subprocess.run,
            ["redis-cli", "--cluster", "create", *[f"127.0.0.1:{s.port}" for s in servers],
             "--cluster-replicas", "0", "--cluster-yes"],
            check=True, capture_output=True, timeout=30,
        )
        async with open_redis(Settings.from_env(
            {"REDIS_URL": servers[0].url, "REDIS_CLUSTER": "true"}
        )) as client:
            assert isinstance(client, RedisCluster)
            await wait_until(client.cluster_info,
                             until=lambda info: info.get("cluster_state") == "ok",
                             timeout_s=30, interval_s=0.1, retry_on=(RedisConnectionError,),
                             message="the cluster never became ok")
        yield servers[0].url
    finally:
        for server in servers:
            server.stop()
