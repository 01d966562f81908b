"""What every part of the conversation store shares: the client, the key names and the scripts.

The scripts are ``storage/lua/<name>.lua`` with ``_prelude.lua`` (``now_ms``,
``finalizable``, ...) and ``_sliding_window_fn.lua`` prepended; they are the only
writers of the conversation, chunk and project hashes, so the whole state machine
is in one directory. All times come from Redis ``TIME`` inside the scripts.

The client decodes replies (``decode_responses=True``); the parts ``cast`` them
to ``str`` where redis-py's types say ``bytes | str``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from redis.asyncio.cluster import RedisCluster

from storage.ratelimit import load_lua
from storage.redis_autopipeline import AutoPipeline, run_script
from storage.redis_client import RedisClient
from storage.store_keys import StoreKeys

#: Every script of the store; registering one only computes its SHA (no round trip).
STORE_SCRIPTS = (
    "create_conversation", "issue_chunk", "issue_chunk_limited", "confirm_chunk", "transition_chunk",
    "add_text_chunk", "delete_chunk", "finish", "mark_finalized", "update_if_exists", "idle_take",
    "finalize_begin", "finalize_check", "finalize_commit", "store_summary", "summary_draft",
    "repair_open_chunks",
)


def ms_to_iso(value: str | float | None) -> str | None:
    if value in (None, ""):
        return None
    return datetime.fromtimestamp(int(float(value)) / 1000, UTC).isoformat().replace("+00:00", "Z")


def iso_to_ms(value: str) -> int:
    """Epoch ms of an ISO 8601 time (a time without zone is taken as UTC); ValueError if bad."""
    parsed = datetime.fromisoformat(value.strip())
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return int(parsed.timestamp() * 1000)


def field_pairs(mapping: Mapping[str, Any]) -> list[str]:
    """``field, value, ...`` for a script's ``hset_pairs`` (None values left out)."""
    out: list[str] = []
    for name, value in mapping.items():
        if value is None:
            continue
        out += [name, str(value)]
    return out


class StoreCore(StoreKeys):
    """The base of each part of :class:`storage.conversations.ConversationStore`."""

    def __init__(
        self, redis: RedisClient, *, key_prefix: str = "echo", autopipeline: AutoPipeline | None = None
    ) -> None:
        super().__init__(key_prefix)
        self.redis = redis
        #: When given, the scripts go over it (one write per loop round) rather than the pool.
        self._autopipeline = autopipeline
        #: Scripts may only touch one slot on Cluster (see ``ChunkStore.issue_chunk_limited``).
        self.is_cluster = isinstance(redis, RedisCluster)
        prelude = load_lua("_prelude.lua") + load_lua("_sliding_window_fn.lua")
        self._scripts: dict[str, Any] = {
            name: redis.register_script(prelude + "\n" + load_lua(f"{name}.lua"))
            for name in STORE_SCRIPTS
        }

    async def redis_now_ms(self) -> int:
        """Redis's clock, in ms (the one clock every process agrees on)."""
        seconds, micros = await self.redis.time()
        return int(seconds) * 1000 + int(micros) // 1000

    def _run(self, name: str, keys: Sequence[str], args: Sequence[Any]) -> Awaitable[Any]:
        return run_script(self._scripts[name], keys, args, self._autopipeline)
