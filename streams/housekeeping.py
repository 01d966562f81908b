"""Housekeeping of one group: what keeps the group healthy across the cluster, not one delivery.

One loop per group and process; on every tick (``MOVE_INTERVAL_S``) it

* drives the delivery's due retries (:meth:`Intake.retry_due`);
* moves due deferred events from the delayed set into the stream (one script);
* reclaims entries idle past the lease (their worker died, XAUTOCLAIM) into
  the delivery, at most ``min(1 s, lease / 4)`` apart, reserving the room
  first from the delivery's one account (:mod:`streams.capacity`); with no
  room, it counts the stranded entries (XPENDING IDLE) and has that much
  room owed to it before new entries;

and less often trims the stream (retention), removes dead consumers and
refreshes the gauges. :func:`ensure_group` creates the group idempotently:
the runtime calls it at start and every loop calls it on NOGROUP.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol

import structlog
from redis.exceptions import ResponseError

from streams import retention
from streams.backlog import backlog_rows
from streams.capacity import RECLAIM, Capacity, Reservation
from streams.group import Entry, GroupContext, entries_from_flat
from streams.loops import cancel, forever, raise_if_cancel_was_swallowed

log = structlog.get_logger(__name__)

MOVE_INTERVAL_S = 0.2
#: Deferred events moved per tick at most.
MOVE_BATCH = 100
RETENTION_INTERVAL_S = 10.0
REAP_INTERVAL_S = 30.0
METRICS_INTERVAL_S = 5.0


class Intake(Protocol):
    """What housekeeping needs of the group's delivery."""

    @property
    def capacity(self) -> Capacity: ...

    def take(self, entries: list[Entry], room: Reservation) -> list[Entry]: ...

    async def retry_due(self, now: float) -> None: ...


async def ensure_group(ctx: GroupContext) -> None:
    """Create the group (with its stream) unless it exists, and this consumer in it."""
    try:
        await ctx.redis.xgroup_create(ctx.keys.stream, ctx.spec.group, id="0", mkstream=True)
    except ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise
    # Visible to operators (XINFO CONSUMERS) from the start, not from the first entry.
    await ctx.redis.xgroup_createconsumer(ctx.keys.stream, ctx.spec.group, ctx.consumer)


class Housekeeping:
    """The housekeeping loop of one consumer group in this process."""

    def __init__(self, ctx: GroupContext, intake: Intake) -> None:
        self.ctx = ctx
        self._intake = intake
        self._reclaim_cursor = "0-0"
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        ctx = self.ctx
        self._tasks = [asyncio.create_task(
            forever(self._run, "housekeep", stream=ctx.keys.stream, group=ctx.spec.group,
                    recreate_group=self._ensure_group),
            name=f"{ctx.name} house",
        )]

    async def stop(self) -> None:
        await cancel(self._tasks)

    async def _ensure_group(self) -> None:
        await ensure_group(self.ctx)

    async def _run(self) -> None:
        ctx = self.ctx
        last = {"reclaim": 0.0, "retention": 0.0, "reap": 0.0, "metrics": 0.0}
        reclaim_every_s = min(1.0, ctx.lease_s / 4)
        while True:
            raise_if_cancel_was_swallowed()
            now = time.monotonic()
            await self._intake.retry_due(now)
            await ctx.scripts.move_due(
                keys=[ctx.keys.delayed, ctx.keys.stream],
                args=[MOVE_BATCH, ctx.config.max_len],
            )
            if now - last["reclaim"] >= reclaim_every_s:
                last["reclaim"] = now
                await self._reclaim()
            if now - last["retention"] >= RETENTION_INTERVAL_S:
                last["retention"] = now
                await retention.trim(ctx.scripts, ctx.keys, ctx.config.retention_max_age_s)
            if now - last["reap"] >= REAP_INTERVAL_S:
                last["reap"] = now
                await self._reap()
            if now - last["metrics"] >= METRICS_INTERVAL_S:
                last["metrics"] = now
                rows = await backlog_rows(ctx.redis, ctx.names, [ctx.spec.stream])
                ctx.metrics.refresh(r for r in rows if r.group == ctx.spec.group)
            await asyncio.sleep(MOVE_INTERVAL_S)

    async def _reclaim(self) -> None:
        ctx, capacity = self.ctx, self._intake.capacity
        lease_ms = int(ctx.lease_s * 1000)
        # Reserved before the await: the reader may be reading at the same time.
        with capacity.reserve(priority=RECLAIM) as room:
            if room.size <= 0:
                stranded = await ctx.redis.xpending_range(
                    ctx.keys.stream, ctx.spec.group, min="-", max="+", count=capacity.bound,
                    idle=lease_ms,
                )
                capacity.owe(RECLAIM, len(stranded))
                return
            cursor, flat = await ctx.scripts.reclaim(
                keys=[ctx.keys.stream, ctx.keys.attempts],
                args=[ctx.spec.group, ctx.consumer, lease_ms, self._reclaim_cursor, room.size],
            )
            self._reclaim_cursor = str(cursor)
            taken = self._intake.take(entries_from_flat(flat), room)
            capacity.owe(RECLAIM, 0)
        if taken:
            ctx.metrics.reclaimed.labels(*ctx.labels).inc(len(taken))
            log.info("stream_reclaimed", stream=ctx.keys.stream, group=ctx.spec.group,
                     count=len(taken))

    async def _reap(self) -> None:
        ctx = self.ctx
        removed = await ctx.scripts.reap_consumers(
            keys=[ctx.keys.stream],
            args=[ctx.spec.group, ctx.consumer, int(ctx.config.dead_consumer_idle_s * 1000)],
        )
        if removed:
            log.info("stream_consumers_removed", stream=ctx.keys.stream, group=ctx.spec.group,
                     consumers=list(removed))
