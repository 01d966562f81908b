"""Delivery of one group's entries: read, run the handler, ack, renew leases, retry, defer,
dead-letter.

Per group and process there is a fixed set of tasks, no task per message:

* a **reader**: first takes this consumer's own pending entries again, then
  reads new ones (``XREADGROUP >``) while there is room. Room is one account
  (:mod:`streams.capacity`, ``concurrency + prefetch`` entries in hand, queued
  or running) that the reader, the reclaim and the retries all reserve from
  before they await Redis. ``prefetch`` is how far the reader reads ahead of
  the handlers, apart from how many run at once (``concurrency``): a fast
  handler gets large reads (one round trip per batch), a slow one a small
  read-ahead so other processes get work. Entries queued in memory are held
  like running ones: the renewer keeps their lease, a stop releases them.
  While entries flow the reader waits for room for half the read-ahead (or
  for the queue to run dry), then reads all the room can take (BLOCK
  100 ms); idle, it waits (BLOCK 2 s) holding room for one entry only, so the
  reclaim is never kept waiting behind a long read;
* ``concurrency`` **workers** running the handler; the entry is acked only
  after it returned. Acks and handler starts are batched by an **acker**
  (:mod:`streams.acker`);
* a **lease renewer** (:mod:`streams.leases`): every ``lease_s / 3``, so a
  long handler keeps its entry while its process lives.

``max_deliveries`` applies to *started* attempts (:mod:`streams.attempts`): an
entry a worker took but never started is not a failure. Raw deliveries keep a
hard cap (3 x ``max_deliveries``). A failed entry waits here for its back-off;
:meth:`Delivery.retry_due` takes it again (housekeeping drives it on its tick).
Entries reclaimed from dead workers come in through :meth:`Delivery.take`. The
dead-letter move, a deferral and a failure record are one Lua script each
(:mod:`streams.outcomes`), run under ``asyncio.shield``.

The hot path costs a few microseconds per entry: entries are taken into the
account a read at a time, workers take queued entries without suspending, and
handled entries are let go, and their counts and durations added to the
metrics, once per burst (every :data:`YIELD_EVERY` entries, when the queue runs
dry, or at once after a handler that took :data:`SLOW_HANDLER_S` or more).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from redis.exceptions import ResponseError

from streams import attempts, leases, outcomes
from streams.acker import Acker
from streams.attempts import History
from streams.backoffs import Backoffs
from streams.capacity import RETRY, Capacity, Reservation
from streams.envelope import EnvelopeError, decode
from streams.group import Entry, GroupContext, entries_from_flat
from streams.loops import cancel, forever, raise_if_cancelling
from streams.metrics import BurstMetrics
from streams.redis_types import REDIS_UNAVAILABLE_ERRORS
from streams.spec import Defer, event_context

log = structlog.get_logger(__name__)

#: XREADGROUP BLOCK when idle; must stay below the client's 5 s socket timeout.
BLOCK_MS = 2000
#: XREADGROUP BLOCK while entries flow: the longest a read holds the whole room.
ACTIVE_BLOCK_MS = 100
#: Own pending entries taken per script call at start.
READ_BATCH = 100
#: A worker whose handlers do not suspend gives the loop a turn after this many entries,
#: so the reader's next read and the acker's batch go out while it works through the queue.
YIELD_EVERY = 32
#: A handler this slow or slower lets its entry go at once, not with the burst.
SLOW_HANDLER_S = 0.001


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
        self._metrics = BurstMetrics(ctx.metrics, ctx.labels)
        #: Handled entries, let go with the burst (_flush).
        self._done: list[str] = []
        self._raw_cap = attempts.raw_cap(ctx.max_deliveries)
        self.capacity = Capacity(ctx.concurrency + ctx.prefetch,
                                 max_waiting=16 * ctx.concurrency)
        self._low_water = max(1, ctx.prefetch // 2)
        self.acker = Acker(ctx)
        # Entries this consumer owns: queued, running or waiting for a retry.
        self._held: dict[str, Entry] = {}
        self._running: set[str] = set()
        self._backoffs = Backoffs()
        self._queue: asyncio.Queue[Entry] = asyncio.Queue()
        #: Where the pass over our own pending entries goes on; None once done.
        self._own_cursor: str | None = "-"
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
            asyncio.create_task(self._forever(self.acker.run_once, "ack"), name=f"{name} acker"),
        ]

    async def stop_intake(self) -> None:
        """Stop reading new entries."""
        await cancel(self._reader)

    async def drain(self, deadline: float) -> None:
        """Let running handlers finish until ``deadline``, release the rest, flush acks.

        Call after :meth:`stop_intake` and once nothing else calls :meth:`take` or
        :meth:`retry_due`: entries arriving later would be neither run nor released.
        """
        self._flush()
        # Entries not started yet go back to the group at once (idle = lease).
        unstarted = [eid for eid in self._held if eid not in self._running]
        while not self._queue.empty():
            self._queue.get_nowait()
        self._backoffs.clear()
        self.capacity.owe(RETRY, 0)
        for eid in unstarted:
            self._drop(eid)
        await leases.release(self.ctx, unstarted)
        while self._running and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        still_running = list(self._running)
        await cancel(self._workers)
        self._flush()
        for eid in still_running:
            self._drop(eid)
        # The starts of handlers cut off count: recorded before their entries go back.
        with contextlib.suppress(*REDIS_UNAVAILABLE_ERRORS, ResponseError):
            await asyncio.shield(self.acker.flush())
        await leases.release(self.ctx, still_running)
        await cancel(self._keepers)
        await asyncio.shield(self.acker.flush())

    async def _forever(self, step: Callable[[], Awaitable[None]], what: str) -> None:
        await forever(step, what, stream=self.ctx.keys.stream, group=self.ctx.spec.group,
                      recreate_group=self._recreate_group)

    # --- intake

    def held_count(self) -> int:
        """Entries in hand (queued or running); never more than ``concurrency + prefetch``."""
        return self.capacity.held_count()

    def take(self, entries: list[Entry], room: Reservation) -> list[Entry]:
        """Queue ``entries`` for the workers against ``room``; return those taken (not held
        here already)."""
        held, queue = self._held, self._queue
        fresh = [entry for entry in entries if entry.entry_id not in held]
        # Entries in hand are all held, so none of these is.
        n = room.hold_many([entry.entry_id for entry in fresh])
        for entry in fresh[n:]:
            # More than was asked for: left unrenewed, it returns to the group after
            # the lease rather than break the bound.
            log.warning("stream_entry_over_reservation", stream=self.ctx.keys.stream,
                        group=self.ctx.spec.group, entry_id=entry.entry_id)
        taken = fresh[:n]
        for entry in taken:
            held[entry.entry_id] = entry
            queue.put_nowait(entry)
        return taken

    async def _read(self) -> None:
        ctx = self.ctx
        keys = [ctx.keys.stream, ctx.keys.attempts]
        # Own pending entries first (a restart with the same consumer name).
        while self._own_cursor is not None:
            await self.capacity.wait_for_space()
            with self.capacity.reserve(READ_BATCH) as room:
                last, mine = await ctx.scripts.own_pending(
                    keys=keys, args=[ctx.spec.group, ctx.consumer, self._own_cursor, room.size]
                )
                self.take(entries_from_flat(mine), room)
            self._own_cursor = f"({last}" if last else None
        idle = True
        task = asyncio.current_task()
        while True:
            raise_if_cancelling(task)
            # Entries flowing: wait for room for a worthwhile batch, unless the workers
            # would otherwise run dry.
            await self.capacity.wait_for_space(
                at_least=1 if idle else self._low_water, starving=self._queue.empty)
            # Idle: one read per wake-up, holding room for one entry only, so the reclaim
            # may use the rest while this read blocks.
            with self.capacity.reserve(1 if idle else None) as room:
                reply = await ctx.redis.xreadgroup(
                    ctx.spec.group, ctx.consumer, {ctx.keys.stream: ">"}, count=room.size,
                    block=BLOCK_MS if idle else ACTIVE_BLOCK_MS,
                )
                idle = not self._take_new(reply, room)

    def _take_new(self, reply: Any, room: Reservation) -> bool:
        """Take the entries of an XREADGROUP ``>`` reply; True if there were any."""
        got = False
        for messages in _messages_by_stream(reply):
            got = got or bool(messages)
            entries = [Entry(eid, fields, 1) for eid, fields in messages if fields]
            self.take(entries, room)
        return got

    # --- handling

    async def _work(self) -> None:
        queue, held, running = self._queue, self._held, self._running
        task = asyncio.current_task()
        since_yield = 0
        while True:
            raise_if_cancelling(task)
            if queue.empty():
                self._flush()
                self.capacity.nudge()  # the reader may read a smaller batch now
                since_yield = 0
                entry = await queue.get()
            elif since_yield >= YIELD_EVERY:
                self._flush()
                since_yield = 0
                await asyncio.sleep(0)
                continue
            else:
                entry = queue.get_nowait()
            since_yield += 1
            if entry.entry_id not in held:  # lost meanwhile
                continue
            running.add(entry.entry_id)
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
                running.discard(entry.entry_id)

    def _flush(self) -> None:
        """Let go of the handled entries; add their counts and durations to the metrics."""
        if self._done:
            done, self._done = self._done, []
            for eid in done:
                self._held.pop(eid, None)
            self.capacity.let_go_many(done)
        self._metrics.flush()

    def _drop(self, entry_id: str) -> None:
        self._held.pop(entry_id, None)
        self.capacity.let_go(entry_id)

    async def _process(self, entry: Entry) -> None:
        ctx, history = self.ctx, entry.history
        if history.started >= ctx.max_deliveries:
            reason, append_error = attempts.exhausted_reason(history)
            await self._dead_letter(entry, reason, append_last_error=append_error)
            return
        if entry.deliveries > self._raw_cap:
            await self._dead_letter(entry, attempts.uncounted_reason(entry.deliveries, history))
            return
        try:
            envelope = decode(entry.fields)
        except EnvelopeError as exc:
            await self._dead_letter(entry, f"bad envelope: {exc}")
            return
        spec = ctx.spec
        parser = spec.parser_for(envelope.type)
        if parser is None:
            await self._dead_letter(entry, f"unknown event type {envelope.type!r}")
            return
        try:
            payload = parser(envelope.payload)
        except (ValueError, TypeError, KeyError) as exc:
            await self._dead_letter(entry, f"bad payload for {envelope.type!r}: {exc!r}")
            return
        event = event_context(spec.stream, spec.group, entry.entry_id, envelope, payload,
                              entry.deliveries, ctx.names, history.attempt,
                              history.last_crashed)
        metrics = self._metrics
        if entry.deliveries == 1:
            metrics.n_first_deliveries += 1
        else:
            metrics.deliveries.observe(entry.deliveries)
        self.acker.started(entry)
        started = time.perf_counter()
        try:
            await spec.handler(event)
        except Defer as defer:
            metrics.handler_durations_s.append(time.perf_counter() - started)
            await asyncio.shield(self._defer(entry, outcomes.defer(
                ctx, self.acker, entry, defer, envelope.next_attempt(defer.payload_update))))
            return
        except Exception as exc:  # noqa: BLE001 - any handler error is a failed delivery
            metrics.handler_durations_s.append(time.perf_counter() - started)
            ctx.metrics.failed.labels(*ctx.labels).inc()
            await asyncio.shield(self._failed(entry, exc))
            return
        elapsed_s = time.perf_counter() - started
        metrics.handler_durations_s.append(elapsed_s)
        metrics.n_processed += 1
        self.acker.ack(entry)
        self._done.append(entry.entry_id)
        if elapsed_s >= SLOW_HANDLER_S:
            self._flush()

    async def _failed(self, entry: Entry, exc: Exception) -> None:
        ctx = self.ctx
        error = f"{type(exc).__name__}: {exc}"[:2000]
        history = entry.history.started_again().failed()
        log.warning("stream_handler_failed", stream=ctx.keys.stream, group=ctx.spec.group,
                    entry_id=entry.entry_id, deliveries=entry.deliveries,
                    attempts=history.started, error=error)
        if history.started >= ctx.max_deliveries:
            await self._dead_letter(entry, attempts.failed_reason(history, error),
                                    history=history, last_error=error)
            return
        if not await outcomes.record_failure(ctx, self.acker, entry, history, error):
            self._drop(entry.entry_id)  # claimed by another consumer meanwhile
            return
        due = time.monotonic() + ctx.spec.retry_delay_s(history.started)
        self._backoffs.add(entry.entry_id, due)
        self.capacity.to_waiting(entry.entry_id)

    async def _dead_letter(
        self, entry: Entry, reason: str, *, history: History | None = None,
        last_error: str = "", append_last_error: bool = False,
    ) -> None:
        await outcomes.dead_letter(
            self.ctx, self.acker, entry, reason, started=(history or entry.history).started,
            last_error=last_error, append_last_error=append_last_error)
        self._drop(entry.entry_id)

    async def _defer(self, entry: Entry, deferred: Awaitable[None]) -> None:
        await deferred
        self._drop(entry.entry_id)

    # --- leases

    async def _renew(self) -> None:
        await asyncio.sleep(self.ctx.lease_s / 3)
        for eid in await leases.renew(self.ctx, list(self._held)):
            # Acked meanwhile (our own ack in flight) or claimed by another consumer.
            if eid in self._held and eid not in self._running:
                self._drop(eid)

    # --- retries

    async def retry_due(self, now: float) -> None:
        """Take again, for another delivery, the failed entries whose back-off ended by ``now``
        (as many as there is room for; the rest when there is)."""
        due = self._backoffs.pop_due(now, self.capacity.is_waiting)
        ctx = self.ctx
        with self.capacity.reserve(len(due), priority=RETRY) as room:
            self.capacity.owe(RETRY, len(due) - room.size)
            self._backoffs.put_back(due[room.size:])
            ids = [eid for _, _, eid in due[:room.size]]
            if not ids:
                return
            try:
                retaken = entries_from_flat(await ctx.scripts.retake(
                    keys=[ctx.keys.stream, ctx.keys.attempts],
                    args=[ctx.spec.group, ctx.consumer, *ids],
                ))
            except BaseException:
                self._backoffs.put_back(due[:room.size])  # try again on the next tick
                raise
            back = {e.entry_id for e in retaken}
            for eid in ids:
                if eid not in back:
                    self._drop(eid)
            for entry in retaken:
                room.hold(entry.entry_id)
                self._held[entry.entry_id] = entry
                self._queue.put_nowait(entry)
        ctx.metrics.retried.labels(*ctx.labels).inc(len(retaken))
