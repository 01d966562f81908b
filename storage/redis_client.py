"""The per-process Redis client: pooled, health-checked, retrying, and owned by the caller.

One client per process, made by :func:`open_redis` (an async context manager
that closes the pool on exit). A redis-py client *is* a pool, so it is made
once and shared; nobody makes a connection per operation.

Failure behaviour, which the HTTP layer relies on:

* a busy pool makes callers wait (``BlockingConnectionPool``; on Cluster
  :class:`storage.redis_cluster.WaitingRedisCluster`) up to ``pool_wait_s``,
  never fail at once;
* a dead connection (Redis restarted) is found by ``health_check_interval``
  or on use, dropped, and the command retried on a new one with exponential
  back-off, so the process recovers on its own;
* while Redis is down every command fails within about a second
  (short connect timeout, few retries), which the error middleware answers
  with 503 and ``Retry-After``.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeAlias

import structlog
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import ExponentialBackoff
from redis.exceptions import BusyLoadingError, ClusterDownError, TryAgainError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from config import RedisSettings
from storage.redis_cluster import WaitingRedisCluster

RedisClient: TypeAlias = "Redis | RedisCluster"

log = structlog.get_logger(__name__)

#: Errors that mean "Redis cannot be reached right now"; HTTP maps them to 503.
REDIS_UNAVAILABLE_ERRORS: tuple[type[Exception], ...] = (
    RedisConnectionError,
    RedisTimeoutError,
    BusyLoadingError,
    ClusterDownError,
    TryAgainError,
)

HEALTH_CHECK_INTERVAL_S = 30
#: ``CLIENT SETNAME`` of every connection, so ``CLIENT LIST`` shows whose they are.
CLIENT_NAME = "echo-gateway"


def lua_source(module_file: str, name: str) -> str:
    """The text of ``lua/<name>`` beside ``module_file`` (pass ``__file__``): every package
    keeps its scripts there, shipped as package data."""
    return (Path(module_file).resolve().parent / "lua" / name).read_text(encoding="utf-8")


@dataclass(frozen=True, slots=True)
class RedisTimeouts:
    """Timeouts of the client; the defaults keep an outage answer under a second."""

    connect_s: float = 0.5
    #: Must exceed the longest ``BLOCK`` a consumer asks for (consumers block 2 s at most).
    socket_s: float = 5.0
    #: How long a caller waits for a free pooled connection.
    pool_wait_s: float = 5.0
    retries: int = 3
    backoff_base_s: float = 0.02
    backoff_cap_s: float = 0.25


class BlockingSentinelConnectionPool(SentinelConnectionPool, BlockingConnectionPool):
    """Sentinel's master discovery with the waiting behaviour of ``BlockingConnectionPool``
    (redis-py's own Sentinel pool fails at once when every connection is busy).

    ``on_master_switch`` callbacks run when :func:`follow_master` sees the Sentinels name
    another master (the auto-pipelined connection drops its connection there)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[no-untyped-call]  # redis-py: unannotated
        self.on_master_switch: list[Callable[[tuple[str, int]], None]] = []


#: How often a Sentinel client asks which server is the master.
MASTER_CHECK_INTERVAL_S = 1.0


async def _close_connections_elsewhere(
    pool: BlockingSentinelConnectionPool, master: tuple[str, int]
) -> None:
    """Close the pool's idle connections, and those in use that are not to ``master`` (the
    ones already on it carry on: their commands are not cut off and retried)."""
    await pool.disconnect(inuse_connections=False)
    # redis-py keeps the checked-out connections in this set and offers no public view.
    stale = [c for c in list(pool._in_use_connections)
             if (getattr(c, "host", None), getattr(c, "port", None)) != master]
    await asyncio.gather(*(c.disconnect() for c in stale), return_exceptions=True)


async def follow_master(
    pool: BlockingSentinelConnectionPool, interval_s: float = MASTER_CHECK_INTERVAL_S
) -> None:
    """Ask the Sentinels for the master every ``interval_s``; when they name another one,
    close every connection of the pool not to it, in use or not, and run ``on_master_switch``.

    redis-py asks for the master only when it opens a connection, so without this the
    pool's open connections would keep writing to a demoted master that is still running
    (a forced failover, a partition) until it turns replica and answers READONLY, about
    10 s later: those writes are lost when it resyncs. A command cut off here fails with
    ``ConnectionError`` (retried on a new connection, else 503).
    """
    last: tuple[str, int] | None = None
    while True:
        try:
            host, port = await pool.sentinel_manager.discover_master(pool.service_name)
            address: tuple[str, int] | None = (str(host), int(port))
        except REDIS_UNAVAILABLE_ERRORS:  # MasterNotFoundError is a ConnectionError
            address = None
        if address is not None:
            if last is not None and address != last:
                log.warning("redis_master_switched", old=f"{last[0]}:{last[1]}",
                            new=f"{address[0]}:{address[1]}")
                pool.master_address = address
                await _close_connections_elsewhere(pool, address)
                for callback in list(pool.on_master_switch):
                    callback(address)
            last = address
        await asyncio.sleep(interval_s)


def keepalive_options() -> dict[int, int]:
    options: dict[int, int] = {}
    for name, value in (("TCP_KEEPIDLE", 30), ("TCP_KEEPINTVL", 10), ("TCP_KEEPCNT", 3)):
        if hasattr(socket, name):
            options[getattr(socket, name)] = value
    return options


def _connection_kwargs(settings: RedisSettings, timeouts: RedisTimeouts) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "decode_responses": True,
        "socket_connect_timeout": timeouts.connect_s,
        "socket_timeout": timeouts.socket_s,
        "socket_keepalive": True,
        "socket_keepalive_options": keepalive_options(),
        "health_check_interval": HEALTH_CHECK_INTERVAL_S,
        "retry": Retry(
            ExponentialBackoff(cap=timeouts.backoff_cap_s, base=timeouts.backoff_base_s),
            retries=timeouts.retries,
        ),
        # Not on timeouts: a hung server would multiply the wait, and a command that
        # timed out may have been applied.
        "retry_on_error": [RedisConnectionError, BusyLoadingError],
        "client_name": CLIENT_NAME,
    }
    url = settings.redis_url or ""
    if url.startswith("rediss://") or settings.redis_ca_file:
        # Certificates are always verified; a private CA is trusted through REDIS_CA_FILE.
        kwargs["ssl_cert_reqs"] = "required"
        kwargs["ssl_check_hostname"] = True
        if settings.redis_ca_file:
            kwargs["ssl_ca_certs"] = settings.redis_ca_file
    return kwargs


def _make_redis(
    settings: RedisSettings, timeouts: RedisTimeouts
) -> tuple[RedisClient, list[Redis]]:
    """The client for ``settings`` (standalone, Sentinel or Cluster), and helper clients
    (the Sentinel connections) that must be closed with it."""
    kwargs = _connection_kwargs(settings, timeouts)
    if settings.redis_sentinels:
        assert settings.redis_sentinel_master
        sentinel = Sentinel(  # type: ignore[no-untyped-call]
            list(settings.redis_sentinels),
            sentinel_kwargs={
                "socket_connect_timeout": timeouts.connect_s,
                "socket_timeout": timeouts.socket_s,
            },
            **{k: v for k, v in kwargs.items() if not k.startswith("ssl")},
        )
        master = sentinel.master_for(
            settings.redis_sentinel_master,
            connection_pool_class=BlockingSentinelConnectionPool,
            max_connections=settings.redis_max_connections,
            timeout=timeouts.pool_wait_s,
        )
        return master, list(sentinel.sentinels)
    if not settings.redis_url:
        raise ValueError("REDIS_URL is not set")
    if settings.redis_cluster:
        cluster_kwargs = {k: v for k, v in kwargs.items() if k not in ("retry_on_error",)}
        cluster = WaitingRedisCluster.from_url(
            settings.redis_url, max_in_flight=settings.redis_max_connections,
            pool_wait_s=timeouts.pool_wait_s, **cluster_kwargs,
        )
        return cluster, []
    pool = BlockingConnectionPool.from_url(
        settings.redis_url,
        max_connections=settings.redis_max_connections,
        timeout=timeouts.pool_wait_s,
        **kwargs,
    )
    return Redis.from_pool(pool), []


@asynccontextmanager
async def open_redis(
    settings: RedisSettings, timeouts: RedisTimeouts | None = None
) -> AsyncIterator[RedisClient]:
    """Create the process's client and close its pool on exit.

    It does not PING: a process starts even while Redis is down and serves
    once it is back (readiness says so meanwhile).
    """
    client, helpers = _make_redis(settings, timeouts or RedisTimeouts())
    follower: asyncio.Task[None] | None = None
    pool = getattr(client, "connection_pool", None)
    if isinstance(pool, BlockingSentinelConnectionPool):
        follower = asyncio.create_task(follow_master(pool), name="redis master follower")
    try:
        yield client
    finally:
        if follower is not None:
            follower.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await follower
        await client.aclose()
        for helper in helpers:
            await helper.aclose()
