"""The Redis client works with TLS (custom CA, always verified), Sentinel and Cluster."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import pytest
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError
from waiting import wait_until

from config import Settings
from devstack.servers import RedisServer, find_redis_server, free_port
from storage.redis_autopipeline import open_autopipeline
from storage.redis_client import RedisClient, open_redis


async def _a_busy_pool_makes_callers_wait(client: RedisClient, max_connections: int) -> None:
    # Each BLPOP holds its connection for 50 ms; many more callers than connections all succeed.
    calls = [client.blpop([f"nothing-{n}"], timeout=0.05) for n in range(max_connections * 4)]
    assert await asyncio.gather(*calls) == [None] * (max_connections * 4)


async def test_a_busy_pool_makes_callers_wait_instead_of_failing(redis_server: RedisServer) -> None:
    settings = Settings.from_env({"REDIS_URL": redis_server.url, "REDIS_MAX_CONNECTIONS": "2"})
    async with open_redis(settings) as client:
        await _a_busy_pool_makes_callers_wait(client, 2)


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture
def tls_files(tmp_path: Path) -> dict[str, Path]:
    """A private CA, a server certificate for 127.0.0.1 it signs, and an unrelated CA."""
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt",
             "-days", "2", "-subj", "/CN=echo-test-ca", cwd=tmp_path)
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "other.key", "-out",
             "other.crt", "-days", "2", "-subj", "/CN=other-ca", cwd=tmp_path)
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "srv.key", "-out", "srv.csr",
             "-subj", "/CN=localhost", cwd=tmp_path)
    (tmp_path / "ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1")
    _openssl("x509", "-req", "-in", "srv.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
             "-CAcreateserial", "-out", "srv.crt", "-days", "2", "-extfile", "ext", cwd=tmp_path)
    return {name: tmp_path / f"{name}.crt" for name in ("ca", "other", "srv")} | {
        "key": tmp_path / "srv.key"
    }


async def test_rediss_verifies_the_server_against_the_configured_ca(
    tmp_path: Path, tls_files: dict[str, Path]
) -> None:
    tls_port = free_port()
    server = RedisServer(tmp_path / "tls", extra_args=(
        "--tls-port", str(tls_port), "--tls-cert-file", str(tls_files["srv"]),
        "--tls-key-file", str(tls_files["key"]), "--tls-ca-cert-file", str(tls_files["ca"]),
        "--tls-auth-clients", "no",
    ))
    async with server:
        url = f"rediss://127.0.0.1:{tls_port}/0"
        trusted = Settings.from_env({"REDIS_URL": url, "REDIS_CA_FILE": str(tls_files["ca"])})
        async with open_redis(trusted) as client, open_autopipeline(trusted, client) as pipeline:
            assert await client.ping() is True
            assert pipeline is not None and await pipeline.execute("PING") == "PONG"

        untrusted = Settings.from_env({"REDIS_URL": url, "REDIS_CA_FILE": str(tls_files["other"])})
        async with open_redis(untrusted) as client, open_autopipeline(untrusted, client) as pipeline:
            with pytest.raises(RedisConnectionError, match="(?i)certificate"):
                await client.ping()
            assert pipeline is not None
            with pytest.raises(RedisConnectionError, match="(?i)certificate"):
                await pipeline.execute("PING")


async def test_sentinel_finds_the_master(tmp_path: Path) -> None:
    async with RedisServer(tmp_path / "master") as master:
        sentinel_port = free_port()
        conf = tmp_path / "sentinel.conf"
        conf.write_text(
            f"port {sentinel_port}\nbind 127.0.0.1\ndir {tmp_path}\n"
            f"sentinel monitor echo-master 127.0.0.1 {master.port} 1\n"
        )
        sentinel = await asyncio.create_subprocess_exec(
            find_redis_server(), str(conf), "--sentinel",
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        try:
            settings = Settings.from_env({
                "REDIS_MAX_CONNECTIONS": "2",
                "REDIS_SENTINELS": f"127.0.0.1:{sentinel_port}",
                "REDIS_SENTINEL_MASTER": "echo-master",
            })
            async with open_redis(settings) as client:
                await wait_until(lambda: client.set("via-sentinel", "yes"), timeout_s=30,
                                 interval_s=0.1, retry_on=(RedisConnectionError,),
                                 message="Sentinel never named a reachable master")
                assert await client.get("via-sentinel") == "yes"
                await _a_busy_pool_makes_callers_wait(client, settings.redis_max_connections)
                async with open_autopipeline(settings, client) as pipeline:
                    # the auto-pipelined connection asks the Sentinels for the master too
                    assert pipeline is not None
                    assert await pipeline.execute("GET", "via-sentinel") == "yes"
        finally:
            if sentinel.returncode is None:
                sentinel.terminate()
            await asyncio.wait_for(sentinel.wait(), timeout=10)


@pytest.mark.redis_cluster
async def test_cluster_runs_hash_tagged_scripts_across_three_masters(settings: Settings) -> None:
    """On the session's cluster (tests/cluster_support.py)."""
    async with open_redis(settings) as client:
        assert isinstance(client, RedisCluster)
        script = client.register_script(
            "redis.call('SET', KEYS[1], ARGV[1]); redis.call('SET', KEYS[2], ARGV[1]); "
            "return redis.call('MGET', KEYS[1], KEYS[2])"
        )
        for n in range(20):
            tag = f"{{c:{n}}}"
            assert await script(keys=[f"echo:{tag}:a", f"echo:{tag}:b"], args=[str(n)]) == [
                str(n), str(n)
            ]
        assert await client.ping() is True
        async with open_autopipeline(settings, client) as pipeline:
            assert pipeline is None  # Cluster: the scripts go through the cluster client


async def test_a_cluster_with_no_reachable_node_is_a_connection_error() -> None:
    """What the API answers 503 for and consumers back off from (redis-py raises a
    RedisClusterException, which would be a 500)."""
    settings = Settings.from_env({"REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
                                  "REDIS_CLUSTER": "true"})
    async with open_redis(settings) as client:
        with pytest.raises(RedisConnectionError, match="cannot be connected"):
            await client.ping()
