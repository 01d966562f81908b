"""Delivery of one group's entries: read, run the handler, ack, renew leases, retry, defer,
dead-letter.

Per group and process there is a fixed set of tasks, no task per message:

* a **reader**: first takes this consumer's own pending entries again, then
  reads new ones (``XREADGROUP >``, BLOCK 2 s) while fewer than
  ``2 x concurrency`` entries are held locally;
* ``concurrency`` **workers** running the handler; the entry is acked only
  after it returned, acks are batched by an **acker**;
* a **lease renewer**: every ``lease_s / 3`` it resets the idle time of every
  entry held here (XCLAIM JUSTID, only if still ours), so a long handler keeps
  its entry while its process lives.

A failed entry waits here for its back-off; :meth:`Delivery.retry_due` takes
it again (housekeeping drives it on its tick). Entries reclaimed from dead
workers come in through :meth:`Delivery.take`. The dead-letter move and a
deferral are one Lua script each, run under ``asyncio.shield``.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import time
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from redis.exceptions import ResponseError

from streams.envelope import Envelope, EnvelopeError, decode, encode_member
from streams.group import Entry, GroupContext, entries_from_flat
from streams.loops import cancel, forever
from streams.redis_types import REDIS_UNAVAILABLE_ERRORS
from streams.spec import Defer, EventContext

log = structlog.get_logger(__name__)

#: XREADGROUP BLOCK; must stay below the client's 5 s socket timeout.
BLOCK_MS = 2000
READ_BATCH = 100


def _messages_by_stream(reply: Any) -> list[list[tuple[str, dict[str, str]]]]:
    """The messages of each stream in an XREADGROUP reply (RESP2, decoded:
    ``[[stream, [(id, fields), ...]], ...]``; ``None`` when the BLOCK timed out)."""
    return [messages for _stream, messages in reply or []]


class Delivery:
    """The delivery loops and local state of one consumer group in this process."""

    def __init__(
        self, ctx: GroupContext, *, recreate_group: Callable[[], Awaitable[None]]
    ) -> None:
        self.ctx = ctx
        self._recreate_group = recreate_group
        # Labelled children resolved once: .labels() per entry costs a lock and a lookup.
        self._m_processed = ctx.metrics.processed.labels(*ctx.labels)
        self._m_handler_s = ctx.metrics.handler_s.labels(*ctx.labels)
        self._m_deliveries = ctx.metrics.deliveries.labels(*ctx.labels)
        self._max_held = 2 * ctx.concurrency
        self._max_waiting = 16 * ctx.concurrency
        # Entries this consumer owns: queued, running or waiting for a retry.
        self._held: dict[str, Entry] = {}
        self._running: set[str] = set()
        self._waiting: list[tuple[float, int, str]] = []  # (due, seq, id): retries
        self._queue: asyncio.Queue[Entry] = asyncio.Queue()
        self._acks: list[Entry] = []
        self._ack_ready = asyncio.Event()
        self._space = asyncio.Event()
        self._drained_own = False
        self._seq = itertools.count()
        self._reader: list[asyncio.Task[None]] = []
        self._workers: list[asyncio.Task[None]] = []
        self._keepers: list[asyncio.Task[None]] = []

    # --- lifecycle

    def start(self) -> None:
        name = self.ctx.name
        self._reader = [
            asyncio.create_task(self._forever(self._read, "read"), name=f"{name} reader"),
        ]
        self._workers = [
            asyncio.create_task(self._work(), name=f"{name} worker {i}")
            for i in range(self.ctx.concurrency)
        ]
        self._keepers = [
            asyncio.create_task(self._forever(self._renew, "renew"), name=f"{name} renew"),
            asyncio.create_task(self._forever(self._ack, "ack"), name=f"{name} acker"),
        ]

    async def stop_intake(self) -> None:
        """Stop reading new entries."""
        await cancel(self._reader)

    async def drain(self, deadline: float) -> None:
        """Let running handlers finish until ``deadline``, release the rest, flush acks.

        Call after :meth:`stop_intake` and once nothing else calls :meth:`take` or
        :meth:`retry_due`: entries arriving later would be neither run nor released.
        """
        # Entries not started yet go back to the group at once (idle = lease).
        unstarted = [eid for eid in self._held if eid not in self._running]
        while not self._queue.empty():
            self._queue.get_nowait()
        self._waiting.clear()
        for eid in unstarted:
            self._held.pop(eid, None)
        await self._release(unstarted)
        while self._running and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        still_running = list(self._running)
        await cancel(self._workers)
        for eid in still_running:
            self._held.pop(eid, None)
        await self._release(still_running)
        await cancel(self._keepers)
        await asyncio.shield(self._flush_acks())

    async def _release(self, ids: list[str]) -> None:
        if not ids:
            return
        with contextlib.suppress(*REDIS_UNAVAILABLE_ERRORS, ResponseError):
            await self.ctx.scripts.renew(
                keys=[self.ctx.keys.stream],
                args=[self.ctx.spec.group, self.ctx.consumer, int(self.ctx.lease_s * 1000), *ids],
            )

    async def _forever(self, step: Callable[[], Awaitable[None]], what: str) -> None:
        await forever(step, what, stream=self.ctx.keys.stream, group=self.ctx.spec.group,
                      recreate_group=self._recreate_group)

    # --- intake

    def free(self) -> int:
        """How many more entries this consumer may take now."""
        if len(self._waiting) >= self._max_waiting:
            return 0
        return self._max_held - (len(self._held) - len(self._waiting))

    def take(self, entries: list[Entry]) -> list[Entry]:
        """Queue ``entries`` for the workers; return those not held here already."""
        taken = []
        for entry in entries:
            if entry.entry_id in self._held:
                continue
            self._held[entry.entry_id] = entry
            self._queue.put_nowait(entry)
            taken.append(entry)
        return taken

    async def _read(self) -> None:
        ctx = self.ctx
        # Own pending entries first (a restart with the same consumer name).
        while not self._drained_own:
            mine = await ctx.scripts.own_pending(
                keys=[ctx.keys.stream], args=[ctx.spec.group, ctx.consumer, READ_BATCH]
            )
            entries = [e for e in entries_from_flat(mine) if e.entry_id not in self._held]
            if not entries:
                self._drained_own = True
                break
            while self.free() <= 0:
                self._space.clear()
                await self._space.wait()
            self.take(entries)
        while True:
            free = self.free()
            if free <= 0:
                self._space.clear()
                await self._space.wait()
                continue
            reply = await ctx.redis.xreadgroup(
                ctx.spec.group, ctx.consumer, {ctx.keys.stream: ">"},
                count=min(READ_BATCH, free), block=BLOCK_MS,
            )
            for messages in _messages_by_stream(reply):
                self.take([Entry(eid, fields, 1) for eid, fields in messages if fields])

    # --- handling

    async def _work(self) -> None:
        while True:
            entry = await self._queue.get()
            if entry.entry_id not in self._held:  # lost meanwhile
                continue
            self._running.add(entry.entry_id)
            try:
                await self._process(entry)
            except asyncio.CancelledError:
                raise
            except Exception:
                # Redis failed during bookkeeping: the entry stays pending and is
                # reclaimed after the lease (handlers are idempotent).
                log.exception("stream_bookkeeping_failed", entry_id=entry.entry_id)
                self._drop(entry.entry_id)
            finally:
                self._running.discard(entry.entry_id)

    def _drop(self, entry_id: str) -> None:
        self._held.pop(entry_id, None)
        self._space.set()

    async def _process(self, entry: Entry) -> None:
        ctx, m = self.ctx, self.ctx.metrics
        if entry.deliveries > ctx.max_deliveries:
            await self._dead_letter(entry, "")
            return
        try:
            envelope = decode(entry.fields)
        except EnvelopeError as exc:
            await self._dead_letter(entry, f"bad envelope: {exc}")
            return
        parser = ctx.spec.parser_for(envelope.type)
        if parser is None:
            await self._dead_letter(entry, f"unknown event type {envelope.type!r}")
            return
        try:
            payload = parser(envelope.payload)
        except (ValueError, TypeError, KeyError) as exc:
            await self._dead_letter(entry, f"bad payload for {envelope.type!r}: {exc!r}")
            return
        event = EventContext(
            stream=ctx.spec.stream, group=ctx.spec.group, entry_id=entry.entry_id,
            envelope=envelope, payload=payload, deliveries=entry.deliveries, names=ctx.names,
        )
        self._m_deliveries.observe(entry.deliveries)
        started = time.perf_counter()
        try:
            await ctx.spec.handler(event)
        except Defer as defer:
            self._m_handler_s.observe(time.perf_counter() - started)
            await asyncio.shield(self._defer(entry, defer, envelope.next_attempt(
                defer.payload_update)))
            return
        except Exception as exc:  # noqa: BLE001 - any handler error is a failed delivery
            self._m_handler_s.observe(time.perf_counter() - started)
            m.failed.labels(*ctx.labels).inc()
            await asyncio.shield(self._failed(entry, exc))
            return
        self._m_handler_s.observe(time.perf_counter() - started)
        self._m_processed.inc()
        self._acks.append(entry)
        self._ack_ready.set()
        self._drop(entry.entry_id)

    async def _failed(self, entry: Entry, exc: Exception) -> None:
        ctx = self.ctx
        error = f"{type(exc).__name__}: {exc}"[:2000]
        log.warning("stream_handler_failed", stream=ctx.keys.stream, group=ctx.spec.group,
                    entry_id=entry.entry_id, deliveries=entry.deliveries, error=error)
        if entry.deliveries >= ctx.max_deliveries:
            await self._dead_letter(entry, error)
            return
        await ctx.redis.hset(ctx.keys.errors, ctx.error_field(entry.entry_id), error)
        due = time.monotonic() + ctx.spec.retry_delay_s(entry.deliveries)
        heapq.heappush(self._waiting, (due, next(self._seq), entry.entry_id))
        self._space.set()

    async def _dead_letter(self, entry: Entry, reason: str) -> None:
        ctx = self.ctx
        moved = await ctx.scripts.deadletter(
            keys=[ctx.keys.stream, ctx.keys.dead, ctx.keys.errors],
            args=[ctx.spec.group, entry.entry_id, ctx.consumer, reason,
                  ctx.config.max_len, ctx.error_field(entry.entry_id)],
        )
        if moved:
            ctx.metrics.dead_lettered.labels(*ctx.labels).inc()
            log.warning("stream_dead_lettered", stream=ctx.keys.stream, group=ctx.spec.group,
                        entry_id=entry.entry_id, deliveries=entry.deliveries, reason=reason)
        self._drop(entry.entry_id)

    async def _defer(self, entry: Entry, defer: Defer, envelope: Envelope) -> None:
        ctx = self.ctx
        done = await ctx.scripts.defer(
            keys=[ctx.keys.stream, ctx.keys.delayed, ctx.keys.errors],
            args=[ctx.spec.group, entry.entry_id, ctx.consumer,
                  max(0, int(defer.delay_s * 1000)), encode_member(envelope),
                  ctx.error_field(entry.entry_id)],
        )
        if done:
            ctx.metrics.deferred.labels(*ctx.labels).inc()
        self._drop(entry.entry_id)

    # --- acks and leases

    async def _ack(self) -> None:
        await self._ack_ready.wait()
        await self._flush_acks()

    async def _flush_acks(self) -> None:
        self._ack_ready.clear()
        batch, self._acks = self._acks, []
        if not batch:
            return
        ctx = self.ctx
        try:
            async with ctx.redis.pipeline(transaction=False) as pipe:
                pipe.xack(ctx.keys.stream, ctx.spec.group, *[e.entry_id for e in batch])
                retried = [ctx.error_field(e.entry_id) for e in batch if e.deliveries > 1]
                if retried:
                    pipe.hdel(ctx.keys.errors, *retried)
                await pipe.execute()
        except BaseException:
            self._acks = batch + self._acks  # try again next time
            self._ack_ready.set()
            raise

    async def _renew(self) -> None:
        ctx = self.ctx
        await asyncio.sleep(ctx.lease_s / 3)
        ids = list(self._held)
        for start in range(0, len(ids), 500):
            lost = await ctx.scripts.renew(
                keys=[ctx.keys.stream],
                args=[ctx.spec.group, ctx.consumer, 0, *ids[start:start + 500]],
            )
            for eid in lost:
                # Acked meanwhile (our own ack in flight) or claimed by another consumer.
                if eid in self._held and eid not in self._running:
                    self._drop(eid)

    # --- retries

    async def retry_due(self, now: float) -> None:
        """Take again, for another delivery, the failed entries whose back-off ended by ``now``."""
        due = []
        while self._waiting and self._waiting[0][0] <= now:
            _, _, eid = heapq.heappop(self._waiting)
            if eid in self._held:
                due.append(eid)
        if not due:
            return
        ctx = self.ctx
        retaken = entries_from_flat(await ctx.scripts.retake(
            keys=[ctx.keys.stream], args=[ctx.spec.group, ctx.consumer, *due]
        ))
        back = {e.entry_id for e in retaken}
        for eid in due:
            if eid not in back:
                self._drop(eid)
        for entry in retaken:
            self._held[entry.entry_id] = entry
            self._queue.put_nowait(entry)
        ctx.metrics.retried.labels(*ctx.labels).inc(len(retaken))
