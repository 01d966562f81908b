"""Participants' presence: the last telemetry ping of each conversation and of each
project visitor, kept for a short TTL so the host's live view shows who is there now.

The sole owner of these keys (``P`` is the key prefix; each key carries the hash tag
of the conversation or project it belongs to, so it lives in that slot)::

    P:{c:<conv>}:ping                   string  JSON telemetry of the conversation's last ping
    P:{p:<project>}:visitor:<visitor>   string  JSON telemetry of the visitor's last ping

Each ping is one ``SET ... EX``: a single key, so it needs no script; an expired key
simply means "not seen lately".
"""

from __future__ import annotations

import json
from typing import Any

from storage.redis_client import RedisClient
from storage.store_keys import StoreKeys


class PresenceStore:
    """Records pings; the telemetry is taken as given (the caller drops what it must not keep)."""

    def __init__(self, redis: RedisClient, *, key_prefix: str = "echo", ttl_s: int) -> None:
        self.redis = redis
        self.ttl_s = ttl_s
        # The bases carry the conversation's / project's hash tag: one slot with them.
        self._keys = StoreKeys(key_prefix)

    def conversation_ping_key(self, conversation_id: str) -> str:
        return f"{self._keys.conversation_key(conversation_id)}:ping"

    def visitor_ping_key(self, project_id: str, visitor_id: str) -> str:
        return f"{self._keys.project_key(project_id)}:visitor:{visitor_id}"

    async def record_conversation_ping(
        self, conversation_id: str, telemetry: dict[str, Any]
    ) -> None:
        """Keep ``telemetry`` as the conversation's last ping for ``ttl_s``."""
        await self._record(self.conversation_ping_key(conversation_id), telemetry)

    async def record_visitor_ping(
        self, project_id: str, visitor_id: str, telemetry: dict[str, Any]
    ) -> None:
        """Keep ``telemetry`` as the visitor's last ping for ``ttl_s``."""
        await self._record(self.visitor_ping_key(project_id, visitor_id), telemetry)

    async def _record(self, key: str, telemetry: dict[str, Any]) -> None:
        await self.redis.set(key, json.dumps(telemetry), ex=self.ttl_s)
