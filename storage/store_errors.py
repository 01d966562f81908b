"""The state changes the conversation store refuses: one family, so the HTTP layer maps each kind
to a status and catches nothing broader."""

from __future__ import annotations

from redis.exceptions import ConnectionError as RedisConnectionError


class StoreError(Exception):
    """A state change the store refused; the HTTP layer maps each kind to a status."""


class ConversationNotFound(StoreError):
    pass


class ChunkNotFound(StoreError):
    pass


class ChunkKeyMismatch(StoreError):
    pass


class ProjectNotFound(StoreError):
    pass


class ProjectClosed(StoreError):
    """The project does not take participation (``is_conversation_allowed`` false)."""


class WriteLost(RedisConnectionError):
    """A write Redis acknowledged is not there when read back: the master changed in between
    (a failover loses what the old master took after the replica's promotion, and the
    auto-pipelined connection and the pool may briefly reach different masters).

    A kind of "Redis unavailable": the HTTP layer answers 503 and the client retries.
    """
