"""A real Sentinel set-up for failover tests: a master, one replica and three Sentinels.

``async with SentinelSetup(tmp_path) as setup:`` starts them on free ports and returns once
every Sentinel knows the replica and the two other Sentinels (so a failover can happen);
:meth:`SentinelSetup.kill_master` kills the master with SIGKILL. Sentinels judge the master
down after ``down-after-milliseconds`` 1000 and give a failover ``failover-timeout`` 3000,
each with a writable config of its own (Sentinel rewrites it).
"""

from __future__ import annotations

import asyncio
import functools
import subprocess
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from waiting import wait_until

from devstack.servers import RedisServer, find_redis_server, free_port

MASTER_NAME = "echo-master"
SENTINELS = 3
QUORUM = 2


def _sentinel_conf(port: int, data_dir: Path, master_port: int) -> str:
    return "\n".join([
        f"port {port}", "bind 127.0.0.1", f"dir {data_dir}",
        f"logfile {data_dir / 'sentinel.log'}",
        f"sentinel monitor {MASTER_NAME} 127.0.0.1 {master_port} {QUORUM}",
        f"sentinel down-after-milliseconds {MASTER_NAME} 1000",
        f"sentinel failover-timeout {MASTER_NAME} 3000",
        f"sentinel parallel-syncs {MASTER_NAME} 1",
        "",
    ])


async def _info(port: int, section: str) -> dict[str, Any]:
    async with _client(port) as node:
        return dict(await node.info(section))


def _client(port: int) -> Redis:
    return Redis(host="127.0.0.1", port=port, decode_responses=True,
                 socket_connect_timeout=0.5, socket_timeout=2)


async def _watched_master(port: int) -> dict[str, Any]:
    """What the Sentinel on ``port`` knows of the master (``SENTINEL MASTER``)."""
    async with _client(port) as sentinel:
        master = await sentinel.sentinel_master(MASTER_NAME)
    assert isinstance(master, dict), master
    return master


class SentinelSetup:
    """A master, a replica of it and three Sentinels watching it, as child processes."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        # No 5 s wait before the first full sync of a replica (repl-diskless-sync-delay).
        self.master = RedisServer(data_dir / "master",
                                  extra_args=("--repl-diskless-sync-delay", "0"))
        self.replica = RedisServer(data_dir / "replica")
        self.sentinel_ports = [free_port() for _ in range(SENTINELS)]
        self._sentinels: list[subprocess.Popen[bytes]] = []

    @property
    def env(self) -> dict[str, str]:
        """The Redis part of a process's environment for this set-up."""
        return {
            "REDIS_SENTINELS": ",".join(f"127.0.0.1:{p}" for p in self.sentinel_ports),
            "REDIS_SENTINEL_MASTER": MASTER_NAME,
        }

    async def __aenter__(self) -> Self:
        try:
            await self._start()
        except BaseException:
            self.stop()
            raise
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await asyncio.to_thread(self.stop)

    async def _start(self) -> None:
        await self.master.start()
        self.replica.port = free_port()
        self.replica.extra_args = ("--replicaof", "127.0.0.1", str(self.master.port))
        await self.replica.start()
        await wait_until(lambda: _info(self.replica.port, "replication"),
                         until=lambda info: info.get("master_link_status") == "up",
                         timeout_s=30, interval_s=0.05, retry_on=(RedisConnectionError,),
                         message="the replica never synced with the master")
        for n, port in enumerate(self.sentinel_ports):
            directory = self.data_dir / f"sentinel{n}"
            directory.mkdir(parents=True)
            conf = directory / "sentinel.conf"
            conf.write_text(_sentinel_conf(port, directory, self.master.port))
            self._sentinels.append(subprocess.Popen(  # noqa: ASYNC220 (starts at once)
                [find_redis_server(), str(conf), "--sentinel"], stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True,
            ))
        for port in self.sentinel_ports:
            await wait_until(functools.partial(_watched_master, port), until=_ready,
                             timeout_s=60, interval_s=0.1,
                             retry_on=(RedisConnectionError,),
                             message=f"Sentinel {port} never saw the replica and its peers")

    async def master_port(self) -> int:
        """The port of the master as the first answering Sentinel names it now."""
        for port in self.sentinel_ports:
            try:
                async with _client(port) as sentinel:
                    address = await sentinel.sentinel_get_master_addr_by_name(MASTER_NAME)
                assert isinstance(address, tuple), address
                return int(address[1])
            except RedisConnectionError:
                continue
        raise RedisConnectionError("no Sentinel answered")

    async def sync_replica(self) -> None:
        """Until the replica has every write the master took so far (WAIT 1)."""
        async with _client(self.master.port) as master:
            acked = await master.wait(1, 5000)
        assert acked == 1, "the replica did not acknowledge the master's writes"

    async def force_failover(self) -> None:
        """``SENTINEL FAILOVER``: the replica is promoted and the old master, still running,
        is made its replica (clients still connected to it get READONLY on writes)."""
        async with _client(self.sentinel_ports[0]) as sentinel:
            await sentinel.execute_command("SENTINEL", "FAILOVER", MASTER_NAME)  # type: ignore[no-untyped-call]

    async def old_master_is_replica(self) -> bool:
        """The first master now reports the replica role."""
        return (await _info(self.master.port, "replication")).get("role") == "slave"

    def kill_master(self) -> None:
        """SIGKILL the master, as a crash of its machine would."""
        self.master.kill()

    def stop(self) -> None:
        for proc in self._sentinels:
            if proc.poll() is None:
                proc.terminate()
        for proc in self._sentinels:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.replica.stop()
        self.master.stop()


def _ready(master: dict[str, Any]) -> bool:
    """The Sentinel knows one replica and the two other Sentinels, and the master is up."""
    return (int(master.get("num-slaves", 0)) == 1
            and int(master.get("num-other-sentinels", 0)) == SENTINELS - 1
            and bool(master.get("is_master")) and not master.get("is_sdown"))
