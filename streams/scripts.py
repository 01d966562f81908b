"""The Lua scripts of ``streams/lua``, loaded once per client (EVALSHA, reloaded on NOSCRIPT)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from storage.redis_client import RedisClient, lua_source


def _source(name: str) -> str:
    return lua_source(__file__, f"{name}.lua")


@dataclass(frozen=True, slots=True)
class Scripts:
    deadletter: Any
    defer: Any
    schedule: Any
    move_due: Any
    renew: Any
    reclaim: Any
    own_pending: Any
    retention: Any
    reap_consumers: Any
    retake: Any

    @classmethod
    def load(cls, redis: RedisClient) -> Scripts:
        return cls(**{
            name: redis.register_script(_source(name))
            for name in cls.__dataclass_fields__
        })
