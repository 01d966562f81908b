"""The Lua scripts of ``streams/lua``, loaded once per client (EVALSHA, reloaded on NOSCRIPT)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from streams.redis_types import RedisClient

#: Shipped as package data beside this module.
LUA_DIR = Path(__file__).resolve().parent / "lua"


def lua_source(name: str) -> str:
    return (LUA_DIR / f"{name}.lua").read_text(encoding="utf-8")


@dataclass(frozen=True, slots=True)
class Scripts:
    ack: Any
    deadletter: Any
    failed: Any
    defer: Any
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
            name: redis.register_script(lua_source(name))
            for name in cls.__dataclass_fields__
        })
