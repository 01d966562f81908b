"""A real 3-master Redis Cluster for the whole session, and the switch that runs a test on it
(a pytest plugin: tests/conftest.py loads it).

Run a test on Cluster by marking it (or its module, ``pytestmark = pytest.mark.redis_cluster``):
``base_env`` then names a node of the cluster with ``REDIS_CLUSTER=true``, so every fixture
built on it (``settings``, ``redis``, ``make_client``/``client``, ``stream_settings``, ``r``,
``publisher``, ...) talks to the cluster, flushed before the test like the single server.
``cluster_settings`` gives the cluster's ``Settings`` directly; ``redis_cluster`` the nodes.

The cluster is started once, the first time a test asks for it (about 2 s): three
``redis-server --cluster-enabled yes`` processes and ``redis-cli --cluster create``.
"""

from __future__ import annotations

import asyncio
import functools
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from waiting import wait_until

from config import Settings
from devstack.servers import RedisServer, free_port_block

MARKER = "redis_cluster"
MASTERS = 3


@dataclass
class RedisClusterNodes:
    """The running masters of the session's cluster."""

    servers: list[RedisServer]

    @property
    def url(self) -> str:
        """A node to start from (the client discovers the others)."""
        return self.servers[0].url

    @property
    def ports(self) -> list[int]:
        return [server.port for server in self.servers]

    def env(self) -> dict[str, str]:
        """The Redis part of a process's environment for this cluster."""
        return {"REDIS_URL": self.url, "REDIS_CLUSTER": "true"}


async def _cluster_is_ok(port: int) -> bool:
    async with Redis(host="127.0.0.1", port=port, decode_responses=True) as node:
        info = await node.cluster("INFO")
    assert isinstance(info, dict), info
    return info.get("cluster_state") == "ok"


async def start_cluster(data_dir: Path, masters: int = MASTERS) -> RedisClusterNodes:
    """Start ``masters`` cluster-enabled servers, join them, wait until every node says ok."""
    if shutil.which("redis-cli") is None:
        pytest.skip("redis-cli is not installed (Debian package redis-tools)")
    servers = [
        # The cluster bus listens on port + 10000: the block leaves room for it.
        RedisServer(data_dir / f"node{i}", port=free_port_block(1), extra_args=(
            "--cluster-enabled", "yes",
            "--cluster-config-file", str(data_dir / f"nodes{i}.conf"),
            "--cluster-node-timeout", "2000",
        ))
        for i in range(masters)
    ]
    nodes = RedisClusterNodes(servers)
    try:
        for server in servers:
            await server.start()
        # In a thread: subprocess.run keeps its timeout (and kills redis-cli at it).
        await asyncio.to_thread(
            subprocess.run,
            ["redis-cli", "--cluster", "create", *[f"127.0.0.1:{p}" for p in nodes.ports],
             "--cluster-replicas", "0", "--cluster-yes"],
            check=True, capture_output=True, timeout=60,
        )
        for port in nodes.ports:
            await wait_until(functools.partial(_cluster_is_ok, port), timeout_s=30,
                             interval_s=0.05, retry_on=(RedisConnectionError,),
                             message=f"cluster node {port} never said cluster_state:ok")
    except BaseException:
        stop_cluster(nodes)
        raise
    return nodes


def stop_cluster(nodes: RedisClusterNodes) -> None:
    for server in nodes.servers:
        server.stop()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{MARKER}: the test's Redis fixtures (base_env and all built on it) use the "
        "session's 3-master Redis Cluster (tests/cluster_support.py)",
    )


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterNodes]:
    """The session's 3-master Redis Cluster (no replicas), started on first use."""
    nodes = asyncio.run(start_cluster(tmp_path_factory.mktemp("redis-cluster")))
    yield nodes
    stop_cluster(nodes)


@pytest.fixture
def cluster_base_env(redis_cluster: RedisClusterNodes) -> dict[str, str]:
    """``base_env`` on the cluster: a gateway's environment with ``REDIS_CLUSTER=true``."""
    return {
        **redis_cluster.env(),
        "LOG_LEVEL": "warning",
        "LOG_FORMAT": "json",
        "CORS_ALLOW_ORIGINS": "https://portal.example.org",
    }


@pytest.fixture
def cluster_settings(cluster_base_env: dict[str, str], s3_env: dict[str, str]) -> Settings:
    """Settings of a process on the cluster (and the test's S3 bucket)."""
    return Settings.from_env({**cluster_base_env, **s3_env})
