"""The Redis Cluster client: callers wait for a free connection, as with the pooled client.

redis-py's asyncio ``RedisCluster`` keeps one list of connections per node and raises
``MaxConnectionsError`` at once when a node's list is full; unlike the synchronous client
it takes no ``connection_pool_class`` (``BlockingConnectionPool``), so nothing there can
wait. :class:`WaitingRedisCluster` bounds the process's *operations in flight* (a command,
a command sent to every primary, or a pipeline) with a semaphore of
``REDIS_MAX_CONNECTIONS`` permits, waited for up to ``pool_wait_s``. An operation holds at
most one connection per node at a time, so no node's list ever fills: the nodes get a few
connections more than the bound, for the topology refreshes redis-py runs inside an
operation and for connections still being closed after a failover. Nested operations (the
per-command retries of a redirected pipeline) run on their caller's permit.

Two cluster errors become the ``ConnectionError`` the rest of the service answers 503 for
and consumers back off from: no free permit within ``pool_wait_s`` (what
``BlockingConnectionPool`` raises) and "Redis Cluster cannot be connected" (no node
answered the topology refresh).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextvars import ContextVar
from typing import Any

from redis.asyncio.cluster import ClusterPipeline, RedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException

#: Connections each node may open beyond the bound (see the module docstring).
SPARE_CONNECTIONS_PER_NODE = 4

_holding: ContextVar[bool] = ContextVar("echo_redis_cluster_holding", default=False)


class WaitingRedisCluster(RedisCluster):
    """``RedisCluster`` whose callers wait (up to ``pool_wait_s``) when ``max_in_flight``
    operations are already running in this process, instead of failing."""

    def __init__(self, *args: Any, max_in_flight: int, pool_wait_s: float, **kwargs: Any) -> None:
        kwargs["max_connections"] = max_in_flight + SPARE_CONNECTIONS_PER_NODE
        super().__init__(*args, **kwargs)
        self._in_flight = asyncio.Semaphore(max_in_flight)
        self._pool_wait_s = pool_wait_s

    @contextlib.asynccontextmanager
    async def operation(self) -> AsyncIterator[None]:
        """Hold one permit (unless this task's operation holds one already) around an
        operation, and turn "no node reachable" into ``ConnectionError``."""
        if _holding.get():
            yield
            return
        try:
            async with asyncio.timeout(self._pool_wait_s):
                await self._in_flight.acquire()
        except TimeoutError:
            raise RedisConnectionError("No connection available.") from None
        token = _holding.set(True)
        try:
            yield
        except RedisClusterException as exc:
            if "cannot be connected" in str(exc):
                raise RedisConnectionError(str(exc)) from exc
            raise
        finally:
            _holding.reset(token)
            self._in_flight.release()

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        async with self.operation():
            return await super().execute_command(*args, **kwargs)

    def pipeline(
        self, transaction: Any | None = None, shard_hint: Any | None = None
    ) -> ClusterPipeline:
        if shard_hint:
            return super().pipeline(transaction, shard_hint)  # raises, as redis-py does
        # redis-py's type stubs leave an attribute abstract that ClusterPipeline sets.
        return WaitingClusterPipeline(self, transaction)  # type: ignore[abstract]


class WaitingClusterPipeline(ClusterPipeline):
    """A pipeline of :class:`WaitingRedisCluster`: its execution is one operation."""

    async def execute(
        self, raise_on_error: bool = True, allow_redirections: bool = True
    ) -> list[Any]:
        client = self.cluster_client
        assert isinstance(client, WaitingRedisCluster)
        async with client.operation():
            return await super().execute(raise_on_error, allow_redirections)
