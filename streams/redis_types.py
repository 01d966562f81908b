"""The Redis client types the streams core accepts and the errors it treats as an outage.

The core takes a client made by its caller (it never connects by itself), so
it only needs the type and the redis-py exceptions that mean "Redis cannot be
reached right now": the loops back off and retry on those, and a publisher
lets them propagate (the HTTP layer answers 503).
"""

from __future__ import annotations

from typing import TypeAlias

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import BusyLoadingError, ClusterDownError, TryAgainError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

#: A standalone/Sentinel client or a Cluster client: every command the core sends works on both.
RedisClient: TypeAlias = "Redis | RedisCluster"

#: Errors that mean "Redis cannot be reached right now" (not "the command was wrong").
REDIS_UNAVAILABLE_ERRORS: tuple[type[Exception], ...] = (
    RedisConnectionError,
    RedisTimeoutError,
    BusyLoadingError,
    ClusterDownError,
    TryAgainError,
)
