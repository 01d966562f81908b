"""The embedded servers: a Redis-compatible server is found even without a system redis-server."""

from __future__ import annotations

from pathlib import Path

import pytest

from config import Settings
from devstack.servers import RedisServer, find_redis_server
from storage.redis_client import open_redis


async def test_without_redis_server_on_path_the_packaged_valkey_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    binary = find_redis_server()
    assert "valkey" in binary
    async with (
        RedisServer(tmp_path / "data", persistent=True) as server,
        open_redis(Settings.from_env({"REDIS_URL": server.url})) as client,
    ):
        await client.set("k", "v")
        assert await client.get("k") == "v"
        info = await client.info("server")
        assert info["executable"].endswith("valkey-server") or "valkey_version" in info
    assert (tmp_path / "data" / "appendonlydir").is_dir()
