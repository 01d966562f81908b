"""Leases of the entries a consumer holds: renewed while held, given back on a stop.

An entry's lease is its idle time in the group's pending list: past ``lease_s``
any consumer may reclaim it. The renewer resets the idle time of every entry
held here (XCLAIM JUSTID, only if still ours); a stop releases entries not
started by setting their idle time to the lease, so another consumer takes
them at once. Both are one ``renew.lua`` call per :data:`RENEW_BATCH` ids.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

from redis.exceptions import ResponseError

from streams.group import GroupContext
from streams.redis_types import REDIS_UNAVAILABLE_ERRORS

RENEW_BATCH = 500


async def renew(ctx: GroupContext, entry_ids: Sequence[str]) -> list[str]:
    """Reset the idle time of ``entry_ids``; return those no longer ours (acked or claimed)."""
    lost: list[str] = []
    for start in range(0, len(entry_ids), RENEW_BATCH):
        lost += await ctx.scripts.renew(
            keys=[ctx.keys.stream],
            args=[ctx.spec.group, ctx.consumer, 0, *entry_ids[start:start + RENEW_BATCH]],
        )
    return lost


async def release(ctx: GroupContext, entry_ids: Sequence[str]) -> None:
    """Give ``entry_ids`` back to the group (idle = lease); Redis errors are left to the
    lease."""
    for start in range(0, len(entry_ids), RENEW_BATCH):
        with contextlib.suppress(*REDIS_UNAVAILABLE_ERRORS, ResponseError):
            await ctx.scripts.renew(
                keys=[ctx.keys.stream],
                args=[ctx.spec.group, ctx.consumer, int(ctx.lease_s * 1000),
                      *entry_ids[start:start + RENEW_BATCH]],
            )
