"""Retention: trim what every group has acknowledged and what is older than the max age.

The trim point (MINID) is computed and applied in one Lua script
(``lua/retention.lua``): the smallest of every group's oldest pending entry,
every group's first undelivered entry and ``now - max_age``. So an entry a
slow group has not acknowledged is never removed, however far a fast group
runs ahead; acknowledged entries stay for ``max_age`` for inspection. A
stream without groups is not trimmed (only the XADD length cap applies).
"""

from __future__ import annotations

from streams.names import StreamKeys
from streams.scripts import Scripts


async def trim(scripts: Scripts, keys: StreamKeys, max_age_s: float) -> int:
    """Trim ``keys.stream`` safely; return how many entries were removed."""
    removed = await scripts.retention(keys=[keys.stream], args=[int(max_age_s * 1000)])
    return int(removed)
