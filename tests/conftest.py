"""Real servers for the whole test session: a private redis-server and a SeaweedFS S3 server.

Both are started once per session on free ports (see ``devstack.servers``);
Redis is flushed before each test that uses it, and every test that touches
S3 gets its own bucket.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from config import Settings
from devstack.servers import RedisServer, SeaweedServer
from storage.redis_client import RedisClient, open_redis
from storage.s3_client import S3Client, ensure_bucket, open_s3

# per_test_timeout (tests/per_test_timeout.py): a hung async test fails alone.
# pytester: test_per_test_timeout.py runs small pytest sessions to prove it.
# streams_support, api_support: the fixtures of the streams tests and of the API tests,
# registered once here so test modules import only their helpers. streams_support comes
# first: api_support imports it, and a module imported before its registration misses
# pytest's assertion rewriting. cluster_support: the session's Redis Cluster and the
# ``redis_cluster`` marker that moves a test's Redis fixtures onto it. transcription_support:
# the ``store`` and ``run_workers`` fixtures of the transcription and recovery tests.
pytest_plugins = [
    "pytester", "per_test_timeout", "streams_support", "api_support", "cluster_support",
    "transcription_support",
]

# Tests that start real processes must not inherit the developer's configuration.
for _name in list(os.environ):
    if _name.startswith(("REDIS_", "S3_", "AWS_", "ANTHROPIC_", "LLM_", "TRANSCRIBER", "CORS_")):
        del os.environ[_name]


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    asyncio.run(server.start())
    yield server
    server.stop()


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedServer]:
    server = SeaweedServer(tmp_path_factory.mktemp("seaweed"))
    asyncio.run(server.start())
    yield server
    server.stop()


_bucket_numbers = itertools.count()


@pytest.fixture
def bucket_name() -> str:
    return f"test-{next(_bucket_numbers)}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def base_env(request: pytest.FixtureRequest, redis_server: RedisServer) -> dict[str, str]:
    """Environment of a gateway that talks to the session's Redis (and no S3); for a test
    marked ``redis_cluster``, to the session's Redis Cluster (tests/cluster_support.py)."""
    if request.node.get_closest_marker("redis_cluster") is not None:
        return dict(request.getfixturevalue("cluster_base_env"))
    return {
        "REDIS_URL": redis_server.url,
        "LOG_LEVEL": "warning",
        "LOG_FORMAT": "json",
        "CORS_ALLOW_ORIGINS": "https://portal.example.org",
    }


@pytest.fixture
def s3_env(s3_server: SeaweedServer, bucket_name: str) -> dict[str, str]:
    return {
        "S3_ENDPOINT_URL": s3_server.endpoint_url,
        "S3_BUCKET": bucket_name,
        "AWS_ACCESS_KEY_ID": s3_server.access_key,
        "AWS_SECRET_ACCESS_KEY": s3_server.secret_key,
    }


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "env(NAME=value, ...): more variables in the test's env, hence in its settings, "
        "api_env and clients (a module's ``pytestmark`` sets them for all its tests)",
    )


@pytest.fixture
def env(
    request: pytest.FixtureRequest, base_env: dict[str, str], s3_env: dict[str, str]
) -> dict[str, str]:
    """The gateway's environment: the session's Redis and the test's bucket, and the
    variables of the test's ``env`` marker."""
    marker = request.node.get_closest_marker("env")
    return {**base_env, **s3_env, **(marker.kwargs if marker is not None else {})}


@pytest.fixture
def settings(env: dict[str, str]) -> Settings:
    return Settings.from_env(env)


@pytest.fixture
async def redis(settings: Settings) -> AsyncIterator[RedisClient]:
    """The session's Redis, empty at the start of the test."""
    async with open_redis(settings) as client:
        await client.flushdb()
        yield client


@pytest.fixture
async def s3(settings: Settings) -> AsyncIterator[S3Client]:
    """An S3 client whose bucket (``settings.s3_bucket``) exists and is new."""
    async with open_s3(settings) as client:
        await ensure_bucket(client, settings.s3_bucket)
        yield client


@pytest.fixture
def project_root() -> Path:
    return Path(__file__).resolve().parent.parent
