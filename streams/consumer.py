"""The consumer runtime: long-lived loops that read, lease, retry, defer and dead-letter.

Per group and process there is a fixed set of tasks, no task per message:

* a **reader**: first takes this consumer's own pending entries again, then
  reads new ones (``XREADGROUP >``, BLOCK 2 s) while fewer than
  ``2 x concurrency`` entries are held locally;
* ``concurrency`` **workers** running the handler; the entry is acked only
  after it returned, acks are batched by an **acker**;
* a **lease renewer**: every ``lease_s / 3`` it resets the idle time of every
  entry held here (XCLAIM JUSTID, only if still ours), so a long handler keeps
  its entry while its process lives;
* **housekeeping**: reclaims entries idle past the lease (their worker died,
  XAUTOCLAIM), redelivers failed entries after their back-off, moves due
  deferred events into the stream, trims (retention), removes dead consumers
  and refreshes the gauges.

Every Redis step that must not be half-done (dead-letter move, deferral,
delayed move, trimming) is one Lua script. Redis outages make the loops log,
back off (capped) and carry on; a lost group (NOGROUP) is created again.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import os
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import structlog
from prometheus_client import CollectorRegistry
from redis.exceptions import ResponseError

from config import Settings
from storage.redis_client import REDIS_UNAVAILABLE_ERRORS, RedisClient
from streams import retention
from streams.backlog import backlog_rows
from streams.envelope import EnvelopeError, decode
from streams.metrics import StreamMetrics
from streams.names import StreamKeys, StreamNames
from streams.publisher import encode_member
from streams.scripts import Scripts
from streams.spec import DeadLetter, Defer, EventContext, GroupSpec

log = structlog.get_logger(__name__)

#: XREADGROUP BLOCK; must stay below the client's 5 s socket timeout.
BLOCK_MS = 2000
READ_BATCH = 100
BACKOFF_CAP_S = 5.0
MOVE_INTERVAL_S = 0.2
RETENTION_INTERVAL_S = 10.0
REAP_INTERVAL_S = 30.0
METRICS_INTERVAL_S = 5.0


def default_consumer_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


@dataclass(slots=True)
class _Entry:
    entry_id: str
    fields: dict[str, str]
    deliveries: int


def _pairs(flat: Sequence[Any]) -> dict[str, str]:
    return {str(flat[i]): str(flat[i + 1]) for i in range(0, len(flat), 2)}


def _triples(flat: Sequence[Any]) -> list[_Entry]:
    return [
        _Entry(str(flat[i]), _pairs(flat[i + 1]), int(flat[i + 2]))
        for i in range(0, len(flat), 3)
    ]


def _is_nogroup(exc: BaseException) -> bool:
    return isinstance(exc, ResponseError) and "NOGROUP" in str(exc)


class _Group:
    """The loops and local state of one consumer group in this process."""

    def __init__(self, runtime: ConsumerRuntime, spec: GroupSpec) -> None:
        s = runtime.settings
        self.rt = runtime
        self.spec = spec
        self.keys: StreamKeys = runtime.names.keys(spec.stream)
        self.concurrency = spec.concurrency or s.stream_concurrency
        self.lease_s = spec.lease_s or s.stream_lease_s
        self.max_deliveries = spec.max_deliveries or s.stream_max_deliveries
        self.labels = (spec.stream, spec.group)
        m = runtime.metrics
        # Labelled children resolved once: .labels() per entry costs a lock and a lookup.
        self.m_processed = m.processed.labels(*self.labels)
        self.m_handler_s = m.handler_s.labels(*self.labels)
        self.m_deliveries = m.deliveries.labels(*self.labels)
        self.max_held = 2 * self.concurrency
        self.max_waiting = 16 * self.concurrency
        # Entries this consumer owns: queued, running or waiting for a retry.
        self.held: dict[str, _Entry] = {}
        self.running: set[str] = set()
        self.waiting: list[tuple[float, int, str]] = []  # (due, seq, id): retries
        self.queue: asyncio.Queue[_Entry] = asyncio.Queue()
        self.acks: list[_Entry] = []
        self.ack_ready = asyncio.Event()
        self.space = asyncio.Event()
        self.reclaim_cursor = "0-0"
        self.drained_own = False
        self.seq = itertools.count()
        self.intake: list[asyncio.Task[None]] = []
        self.workers: list[asyncio.Task[None]] = []
        self.keepers: list[asyncio.Task[None]] = []

    # --- lifecycle

    def start(self) -> None:
        name = f"{self.spec.stream}/{self.spec.group}"
        self.intake = [
            asyncio.create_task(self._forever(self._read, "read"), name=f"{name} reader"),
            asyncio.create_task(self._forever(self._housekeep, "housekeep"), name=f"{name} house"),
        ]
        self.workers = [
            asyncio.create_task(self._work(), name=f"{name} worker {i}")
            for i in range(self.concurrency)
        ]
        self.keepers = [
            asyncio.create_task(self._forever(self._renew, "renew"), name=f"{name} renew"),
            asyncio.create_task(self._forever(self._ack, "ack"), name=f"{name} acker"),
        ]

    async def stop(self, deadline: float) -> None:
        """Stop reading, let running handlers finish until ``deadline``, release the rest."""
        await _cancel(self.intake)
        # Entries not started yet go back to the group at once (idle = lease).
        unstarted = [eid for eid in self.held if eid not in self.running]
        while not self.queue.empty():
            self.queue.get_nowait()
        self.waiting.clear()
        for eid in unstarted:
            self.held.pop(eid, None)
        await self._release(unstarted)
        while self.running and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        still_running = list(self.running)
        await _cancel(self.workers)
        for eid in still_running:
            self.held.pop(eid, None)
        await self._release(still_running)
        await _cancel(self.keepers)
        await asyncio.shield(self._flush_acks())

    async def _release(self, ids: list[str]) -> None:
        if not ids:
            return
        with contextlib.suppress(*REDIS_UNAVAILABLE_ERRORS, ResponseError):
            await self.rt.scripts.renew(
                keys=[self.keys.stream],
                args=[self.spec.group, self.rt.consumer, int(self.lease_s * 1000), *ids],
            )

    async def ensure_group(self) -> None:
        try:
            await self.rt.redis.xgroup_create(
                self.keys.stream, self.spec.group, id="0", mkstream=True
            )
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        # Visible to operators (XINFO CONSUMERS) from the start, not from the first entry.
        await self.rt.redis.xgroup_createconsumer(
            self.keys.stream, self.spec.group, self.rt.consumer
        )

    async def _forever(self, step: Callable[[], Awaitable[None]], what: str) -> None:
        """Run ``step`` again and again; outages back off and recover, nothing kills the loop."""
        failures = 0
        while True:
            try:
                await step()
                failures = 0
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise asyncio.CancelledError  # a callee swallowed our cancellation
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failures += 1
                delay_s = min(BACKOFF_CAP_S, 0.1 * 2**failures)
                if _is_nogroup(exc):
                    log.warning("stream_group_missing", stream=self.keys.stream,
                                group=self.spec.group)
                    with contextlib.suppress(Exception):
                        await self.ensure_group()
                        continue
                elif isinstance(exc, REDIS_UNAVAILABLE_ERRORS):
                    log.warning("stream_redis_unavailable", loop=what, error=str(exc),
                                retry_in_s=delay_s)
                else:
                    log.exception("stream_loop_error", loop=what, stream=self.keys.stream,
                                  group=self.spec.group)
                await asyncio.sleep(delay_s)

    # --- intake

    def _free(self) -> int:
        if len(self.waiting) >= self.max_waiting:
            return 0
        return self.max_held - (len(self.held) - len(self.waiting))

    def _take(self, entries: list[_Entry]) -> None:
        for entry in entries:
            if entry.entry_id in self.held:
                continue
            self.held[entry.entry_id] = entry
            self.queue.put_nowait(entry)

    async def _read(self) -> None:
        # Own pending entries first (a restart with the same consumer name).
        while not self.drained_own:
            mine = await self.rt.scripts.own_pending(
                keys=[self.keys.stream], args=[self.spec.group, self.rt.consumer, READ_BATCH]
            )
            entries = [e for e in _triples(mine) if e.entry_id not in self.held]
            if not entries:
                self.drained_own = True
                break
            while self._free() <= 0:
                self.space.clear()
                await self.space.wait()
            self._take(entries)
        while True:
            free = self._free()
            if free <= 0:
                self.space.clear()
                await self.space.wait()
                continue
            reply = await self.rt.redis.xreadgroup(
                self.spec.group, self.rt.consumer, {self.keys.stream: ">"},
                count=min(READ_BATCH, free), block=BLOCK_MS,
            )
            for _stream, messages in reply or []:
                self._take([_Entry(eid, fields, 1) for eid, fields in messages if fields])

    # --- handling

    async def _work(self) -> None:
        while True:
            entry = await self.queue.get()
            if entry.entry_id not in self.held:  # lost meanwhile
                continue
            self.running.add(entry.entry_id)
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
                self.running.discard(entry.entry_id)

    def _drop(self, entry_id: str) -> None:
        self.held.pop(entry_id, None)
        self.space.set()

    async def _process(self, entry: _Entry) -> None:
        m = self.rt.metrics
        if entry.deliveries > self.max_deliveries:
            await self._dead_letter(entry, "")
            return
        try:
            envelope = decode(entry.fields)
        except EnvelopeError as exc:
            await self._dead_letter(entry, f"bad envelope: {exc}")
            return
        parser = self.spec.parser_for(envelope.type)
        if parser is None:
            await self._dead_letter(entry, f"unknown event type {envelope.type!r}")
            return
        try:
            payload = parser(envelope.payload)
        except (ValueError, TypeError, KeyError) as exc:
            await self._dead_letter(entry, f"bad payload for {envelope.type!r}: {exc!r}")
            return
        ctx = EventContext(
            stream=self.spec.stream, group=self.spec.group, entry_id=entry.entry_id,
            envelope=envelope, payload=payload, deliveries=entry.deliveries, names=self.rt.names,
        )
        self.m_deliveries.observe(entry.deliveries)
        started = time.perf_counter()
        try:
            await self.spec.handler(ctx)
        except Defer as defer:
            m.handler_s.labels(*self.labels).observe(time.perf_counter() - started)
            await asyncio.shield(self._defer(entry, defer, envelope.next_attempt(
                defer.payload_update)))
            return
        except DeadLetter as exc:
            m.failed.labels(*self.labels).inc()
            await asyncio.shield(self._dead_letter(entry, f"handler gave up: {exc}"))
            return
        except Exception as exc:
            m.handler_s.labels(*self.labels).observe(time.perf_counter() - started)
            m.failed.labels(*self.labels).inc()
            await asyncio.shield(self._failed(entry, exc))
            return
        self.m_handler_s.observe(time.perf_counter() - started)
        self.m_processed.inc()
        self.acks.append(entry)
        self.ack_ready.set()
        self._drop(entry.entry_id)

    def _error_field(self, entry_id: str) -> str:
        return StreamNames.error_field(self.spec.group, entry_id)

    async def _failed(self, entry: _Entry, exc: Exception) -> None:
        error = f"{type(exc).__name__}: {exc}"[:2000]
        log.warning("stream_handler_failed", stream=self.keys.stream, group=self.spec.group,
                    entry_id=entry.entry_id, deliveries=entry.deliveries, error=error)
        if entry.deliveries >= self.max_deliveries:
            await self._dead_letter(entry, error)
            return
        await self.rt.redis.hset(self.keys.errors, self._error_field(entry.entry_id), error)
        due = time.monotonic() + self.spec.retry_delay_s(entry.deliveries)
        heapq.heappush(self.waiting, (due, next(self.seq), entry.entry_id))
        self.space.set()

    async def _dead_letter(self, entry: _Entry, reason: str) -> None:
        moved = await self.rt.scripts.deadletter(
            keys=[self.keys.stream, self.keys.dead, self.keys.errors],
            args=[self.spec.group, entry.entry_id, self.rt.consumer, reason,
                  self.rt.settings.stream_max_len, self._error_field(entry.entry_id)],
        )
        if moved:
            self.rt.metrics.dead_lettered.labels(*self.labels).inc()
            log.warning("stream_dead_lettered", stream=self.keys.stream, group=self.spec.group,
                        entry_id=entry.entry_id, deliveries=entry.deliveries, reason=reason)
        self._drop(entry.entry_id)

    async def _defer(self, entry: _Entry, defer: Defer, envelope: Any) -> None:
        done = await self.rt.scripts.defer(
            keys=[self.keys.stream, self.keys.delayed, self.keys.errors],
            args=[self.spec.group, entry.entry_id, self.rt.consumer,
                  max(0, int(defer.delay_s * 1000)), encode_member(envelope),
                  self._error_field(entry.entry_id)],
        )
        if done:
            self.rt.metrics.deferred.labels(*self.labels).inc()
        self._drop(entry.entry_id)

    # --- acks and leases

    async def _ack(self) -> None:
        await self.ack_ready.wait()
        await self._flush_acks()

    async def _flush_acks(self) -> None:
        self.ack_ready.clear()
        batch, self.acks = self.acks, []
        if not batch:
            return
        try:
            async with self.rt.redis.pipeline(transaction=False) as pipe:
                pipe.xack(self.keys.stream, self.spec.group, *[e.entry_id for e in batch])
                retried = [self._error_field(e.entry_id) for e in batch if e.deliveries > 1]
                if retried:
                    pipe.hdel(self.keys.errors, *retried)
                await pipe.execute()
        except BaseException:
            self.acks = batch + self.acks  # try again next time
            self.ack_ready.set()
            raise

    async def _renew(self) -> None:
        await asyncio.sleep(self.lease_s / 3)
        ids = list(self.held)
        for start in range(0, len(ids), 500):
            lost = await self.rt.scripts.renew(
                keys=[self.keys.stream],
                args=[self.spec.group, self.rt.consumer, 0, *ids[start:start + 500]],
            )
            for eid in lost:
                # Acked meanwhile (our own ack in flight) or claimed by another consumer.
                if eid in self.held and eid not in self.running:
                    self._drop(eid)

    # --- housekeeping

    async def _housekeep(self) -> None:
        last = {"reclaim": 0.0, "retention": 0.0, "reap": 0.0, "metrics": 0.0}
        reclaim_every_s = min(1.0, self.lease_s / 4)
        while True:
            now = time.monotonic()
            await self._retry_due(now)
            await self.rt.scripts.move_due(
                keys=[self.keys.delayed, self.keys.stream],
                args=[READ_BATCH, self.rt.settings.stream_max_len],
            )
            if now - last["reclaim"] >= reclaim_every_s:
                last["reclaim"] = now
                await self._reclaim()
            if now - last["retention"] >= RETENTION_INTERVAL_S:
                last["retention"] = now
                await retention.trim(self.rt.redis, self.rt.scripts, self.keys,
                                     self.rt.settings.stream_retention_max_age_s)
            if now - last["reap"] >= REAP_INTERVAL_S:
                last["reap"] = now
                await self._reap()
            if now - last["metrics"] >= METRICS_INTERVAL_S:
                last["metrics"] = now
                rows = await backlog_rows(self.rt.redis, self.rt.names, [self.spec.stream])
                self.rt.metrics.refresh(r for r in rows if r.group == self.spec.group)
            await asyncio.sleep(MOVE_INTERVAL_S)

    async def _retry_due(self, now: float) -> None:
        due = []
        while self.waiting and self.waiting[0][0] <= now:
            _, _, eid = heapq.heappop(self.waiting)
            if eid in self.held:
                due.append(eid)
        if not due:
            return
        retaken = _triples(await self.rt.scripts.retake(
            keys=[self.keys.stream], args=[self.spec.group, self.rt.consumer, *due]
        ))
        back = {e.entry_id for e in retaken}
        for eid in due:
            if eid not in back:
                self._drop(eid)
        for entry in retaken:
            self.held[entry.entry_id] = entry
            self.queue.put_nowait(entry)
        self.rt.metrics.retried.labels(*self.labels).inc(len(retaken))

    async def _reclaim(self) -> None:
        free = self._free()
        if free <= 0:
            return
        cursor, flat = await self.rt.scripts.reclaim(
            keys=[self.keys.stream],
            args=[self.spec.group, self.rt.consumer, int(self.lease_s * 1000),
                  self.reclaim_cursor, free],
        )
        self.reclaim_cursor = str(cursor)
        entries = [e for e in _triples(flat) if e.entry_id not in self.held]
        if entries:
            self.rt.metrics.reclaimed.labels(*self.labels).inc(len(entries))
            log.info("stream_reclaimed", stream=self.keys.stream, group=self.spec.group,
                     count=len(entries))
            self._take(entries)

    async def _reap(self) -> None:
        removed = await self.rt.scripts.reap_consumers(
            keys=[self.keys.stream],
            args=[self.spec.group, self.rt.consumer,
                  int(self.rt.settings.stream_dead_consumer_idle_s * 1000)],
        )
        if removed:
            log.info("stream_consumers_removed", stream=self.keys.stream, group=self.spec.group,
                     consumers=list(removed))


async def _cancel(tasks: list[asyncio.Task[None]]) -> None:
    """Cancel and await ``tasks``; cancel again any that swallowed the first cancellation
    (a redis-py call interrupted at the wrong moment can eat a CancelledError)."""
    pending = {t for t in tasks if not t.done()}
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=0.5)
    for task in tasks:
        if not task.cancelled() and task.exception() is not None:
            log.error("stream_task_failed", task=task.get_name(), error=repr(task.exception()))


class ConsumerRuntime:
    """Runs the consumer groups of ``specs`` in this process.

    ``start()`` creates the groups (idempotently) and starts the loops;
    ``stop(grace_s)`` stops reading, gives running handlers ``grace_s`` to
    finish, releases everything else to the other consumers and flushes acks.
    """

    def __init__(
        self,
        redis: RedisClient,
        settings: Settings,
        registry: CollectorRegistry,
        specs: Sequence[GroupSpec],
        *,
        consumer_name: str | None = None,
    ) -> None:
        pairs = [(s.stream, s.group) for s in specs]
        if len(set(pairs)) != len(pairs):
            raise ValueError("a group is listed twice")
        self.redis = redis
        self.settings = settings
        self.names = StreamNames(settings.redis_key_prefix)
        self.consumer = consumer_name or settings.consumer_name or default_consumer_name()
        self.metrics = StreamMetrics(registry)
        self.scripts = Scripts.load(redis)
        self.groups = [_Group(self, spec) for spec in specs]
        self._started = False

    async def start(self) -> None:
        for group in self.groups:
            # Redis may be down at start: the loops create the group when it is back.
            with contextlib.suppress(*REDIS_UNAVAILABLE_ERRORS):
                await group.ensure_group()
        for group in self.groups:
            group.start()
        self._started = True
        log.info("stream_consumers_started", consumer=self.consumer,
                 groups=[f"{g.spec.stream}/{g.spec.group}" for g in self.groups])

    async def stop(self, grace_s: float | None = None) -> None:
        if not self._started:
            return
        self._started = False
        grace = self.settings.shutdown_grace_s if grace_s is None else grace_s
        deadline = time.monotonic() + grace
        await asyncio.gather(*(g.stop(deadline) for g in self.groups))
        log.info("stream_consumers_stopped", consumer=self.consumer)
