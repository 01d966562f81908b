"""What becomes of an entry whose handler did not simply return: each outcome one Lua script.

A failed delivery is recorded (its error and started attempts, while the entry
is still ours), an exhausted or unreadable entry moves to the dead letters, a
deferred one is acked and scheduled again. Each first settles the acker
(:meth:`streams.acker.Acker.settle`), so no batch writes a stale start marker
after the script. The caller (:mod:`streams.delivery`) lets the entry go or
keeps it for its retry.
"""

from __future__ import annotations

import structlog

from streams.acker import Acker
from streams.attempts import History
from streams.envelope import Envelope, encode_member
from streams.group import Entry, GroupContext
from streams.spec import Defer

log = structlog.get_logger(__name__)


async def record_failure(
    ctx: GroupContext, acker: Acker, entry: Entry, history: History, error: str
) -> bool:
    """Record a failed delivery (error and attempts); False if the entry is no longer ours."""
    await acker.settle(entry.entry_id)
    recorded = await ctx.scripts.failed(
        keys=[ctx.keys.stream, ctx.keys.errors, ctx.keys.attempts],
        args=[ctx.spec.group, entry.entry_id, ctx.consumer, ctx.error_field(entry.entry_id),
              error, history.encode()],
    )
    return bool(recorded)


async def dead_letter(
    ctx: GroupContext, acker: Acker, entry: Entry, reason: str, *, started: int,
    last_error: str = "", append_last_error: bool = False,
) -> None:
    """Move ``entry`` to the stream's dead letters with ``reason`` (if still ours)."""
    await acker.settle(entry.entry_id)
    moved = await ctx.scripts.deadletter(
        keys=[ctx.keys.stream, ctx.keys.dead, ctx.keys.errors, ctx.keys.attempts],
        args=[ctx.spec.group, entry.entry_id, ctx.consumer, reason,
              ctx.config.max_len, ctx.error_field(entry.entry_id), started, last_error,
              "1" if append_last_error else ""],
    )
    if moved:
        ctx.metrics.dead_lettered.labels(*ctx.labels).inc()
        log.warning("stream_dead_lettered", stream=ctx.keys.stream, group=ctx.spec.group,
                    entry_id=entry.entry_id, deliveries=entry.deliveries,
                    attempts=started, reason=reason)


async def defer(
    ctx: GroupContext, acker: Acker, entry: Entry, deferral: Defer, envelope: Envelope
) -> None:
    """Ack ``entry`` and schedule ``envelope`` (its next attempt) after the deferral's delay."""
    await acker.settle(entry.entry_id)
    done = await ctx.scripts.defer(
        keys=[ctx.keys.stream, ctx.keys.delayed, ctx.keys.errors, ctx.keys.attempts],
        args=[ctx.spec.group, entry.entry_id, ctx.consumer,
              max(0, int(deferral.delay_s * 1000)), encode_member(envelope),
              ctx.error_field(entry.entry_id)],
    )
    if done:
        ctx.metrics.deferred.labels(*ctx.labels).inc()
