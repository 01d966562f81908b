"""A cluster-wide counting semaphore of leased permits, and a shared "pause until", on Redis.

It bounds calls to a provider across every process: the LLM layer (``{llm}``
keys) and transcription (``{transcription}`` keys) each own one, with metrics of
their own that follow :class:`PermitMetrics`.

A permit is a lease: a member of a sorted set scored by its expiry in Redis
server time (``TIME`` inside the scripts, so process clocks never matter). A
holder renews it every third of the lease while its call runs and removes it
in a cancellation-safe ``finally``; a crashed process's permit expires and is
reclaimed by the next acquire, so it is free again within one lease.

Waiters queue in ticket order (first come, first served) and keep their place
with a heartbeat; a waiter that dies drops out after ``waiter_ttl_s``. Waiting
polls Redis with short jittered sleeps near the head of the queue and longer
ones further back; a release in this process wakes its own waiters at once.

If Redis cannot be reached, acquiring waits and retries: there is no
per-process fallback that would multiply the bound.

Cancellation always ends a wait, a hold and a lease renewer, even when an await
below swallowed it: on Python 3.11, ``asyncio.wait_for`` (which redis-py uses to
write every command) returns its result instead of raising when the cancel
arrives in the loop round its inner write finished (CPython gh-86296), so each
loop also checks ``Task.cancelling()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import socket
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol

import structlog

from storage.redis_client import REDIS_UNAVAILABLE_ERRORS, RedisClient, lua_source

log = structlog.get_logger(__name__)


def _lua(name: str) -> str:
    return lua_source(__file__, name)


def _raise_if_cancel_was_swallowed(task: asyncio.Task[Any], cancels_before: int) -> None:
    """Raise the ``CancelledError`` of a ``task.cancel()`` since ``cancels_before`` that an
    await returned from without raising (see the module docstring): a cancelled waiter must
    not poll on, and a cancelled renewer must end, or whoever awaits them waits forever."""
    if task.cancelling() > cancels_before:
        raise asyncio.CancelledError


def _current_task() -> asyncio.Task[Any]:
    task = asyncio.current_task()
    assert task is not None, "permits are taken inside a task"
    return task


class _Gauge(Protocol):
    def set(self, value: float) -> None: ...


class _Counter(Protocol):
    def inc(self, amount: float = 1) -> None: ...


class _Observer(Protocol):
    def observe(self, amount: float) -> None: ...


class _LabelledHistogram(Protocol):
    def labels(self, *labelvalues: str) -> _Observer: ...


class PermitMetrics(Protocol):
    """What the semaphore reports; each owner names its own metrics (``echo_llm_*``,
    ``echo_transcription_*``) and hands an object with these attributes."""

    @property
    def queue_depth_cluster(self) -> _Gauge: ...
    @property
    def queue_depth_process(self) -> _Gauge: ...
    @property
    def permits_in_use(self) -> _Gauge: ...
    @property
    def permits_held_process(self) -> _Gauge: ...
    @property
    def wait_seconds(self) -> _LabelledHistogram: ...
    @property
    def leases_lost(self) -> _Counter: ...
    @property
    def leases_reclaimed(self) -> _Counter: ...
    @property
    def redis_errors(self) -> _Counter: ...


@dataclass(frozen=True, slots=True)
class LimiterKeys:
    """The keys of one cluster-wide semaphore and its shared pause.

    Every key of one semaphore shares the hash tag ``{<tag>}`` so the Lua scripts that
    touch several of them run on one Cluster slot.
    """

    #: ZSET holder id -> lease expiry (Redis server time, ms).
    holders: str
    #: ZSET waiter id -> ticket number (FIFO order).
    queue: str
    #: ZSET waiter id -> heartbeat expiry (ms); a waiter that stops polling is dropped.
    heartbeats: str
    #: Counter that hands out tickets.
    tickets: str
    #: String: Redis server time (ms) before which no call starts.
    pause_until: str
    #: The semaphore's name (its hash tag), used in log events.
    tag: str = "llm"

    @classmethod
    def for_prefix(cls, prefix: str, tag: str = "llm") -> LimiterKeys:
        """Keys of one bound; ``tag`` names it (``llm``, ``transcription``) and is its hash tag."""
        base = f"{prefix}:{{{tag}}}"
        return cls(
            holders=f"{base}:permits:holders",
            queue=f"{base}:permits:queue",
            heartbeats=f"{base}:permits:heartbeats",
            tickets=f"{base}:permits:tickets",
            pause_until=f"{base}:pause_until",
            tag=tag,
        )

    def all(self) -> list[str]:
        return [self.holders, self.queue, self.heartbeats, self.tickets, self.pause_until]


class PermitUnavailable(Exception):
    """No permit could be had before the deadline (the queue is long, or Redis is down)."""


@dataclass(frozen=True, slots=True)
class LimiterConfig:
    limit: int = 3
    lease_s: float = 30.0
    #: A waiter that has not polled for this long loses its place in the queue.
    waiter_ttl_s: float = 10.0
    #: Poll interval of the waiters that are next in line (jittered).
    head_poll_s: float = 0.015
    #: Poll interval cap of waiters further back.
    tail_poll_max_s: float = 0.5
    #: Back-off cap while Redis cannot be reached.
    redis_retry_max_s: float = 1.0


class Permit:
    """A held permit. ``lost`` is set when its lease could not be kept."""

    def __init__(self, holder_id: str, waited_s: float) -> None:
        self.holder_id = holder_id
        self.waited_s = waited_s
        self.lost = asyncio.Event()


class ClusterLimiter:
    """At most ``config.limit`` permits held across every process sharing ``redis``."""

    def __init__(
        self,
        redis: RedisClient,
        keys: LimiterKeys,
        config: LimiterConfig,
        metrics: PermitMetrics,
        *,
        model: str = "",
    ) -> None:
        self._redis = redis
        self._keys = keys
        self._config = config
        self._metrics = metrics
        self._model = model
        self._process_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self._acquire = redis.register_script(_lua("permits_acquire.lua"))
        self._renew = redis.register_script(_lua("permits_renew.lua"))
        self._release = redis.register_script(_lua("permits_release.lua"))
        self._pause = redis.register_script(_lua("permits_pause.lua"))
        self._local_waiters = 0
        self._local_holders = 0
        self._wake = asyncio.Event()

    @property
    def config(self) -> LimiterConfig:
        return self._config

    # --- permits

    @contextlib.asynccontextmanager
    async def permit(self, deadline: float | None = None) -> AsyncIterator[Permit]:
        """Wait (FIFO, pause respected) for a permit, hold it with renewals, then release it.

        ``deadline`` is a ``time.monotonic()`` value; past it, :class:`PermitUnavailable`.
        """
        holder_id = f"{self._process_id}:{uuid.uuid4().hex}"
        waited_s = await self._wait_for_permit(holder_id, deadline)
        permit = Permit(holder_id, waited_s)
        self._local_holders += 1
        self._metrics.permits_held_process.set(self._local_holders)
        renewer = asyncio.create_task(self._keep_lease(permit), name=f"llm-lease-{holder_id}")
        try:
            yield permit
        finally:
            renewer.cancel()
            self._local_holders -= 1
            self._metrics.permits_held_process.set(self._local_holders)
            # Shielded: a cancelled caller still gives the permit back. Awaiting the renewer
            # inside the shield also keeps a cancel of this task from being mistaken for the
            # renewer's own end (``await renewer`` raises CancelledError for both).
            await asyncio.shield(self._end_hold(renewer, holder_id))

    async def _end_hold(self, renewer: asyncio.Task[None], holder_id: str) -> None:
        await asyncio.wait([renewer])  # cancelled: ends at its next await
        await self._give_back(holder_id)

    async def _wait_for_permit(self, holder_id: str, deadline: float | None) -> float:
        started = time.monotonic()
        self._local_waiters += 1
        self._metrics.queue_depth_process.set(self._local_waiters)
        redis_failures = 0
        task = _current_task()
        cancels_before = task.cancelling()
        try:
            while True:
                _raise_if_cancel_was_swallowed(task, cancels_before)
                if deadline is not None and time.monotonic() > deadline:
                    raise PermitUnavailable(f"no {self._keys.tag} permit before the deadline")
                try:
                    reply = await self._acquire(
                        keys=self._keys.all(),
                        args=[
                            holder_id,
                            self._config.limit,
                            int(self._config.lease_s * 1000),
                            int(self._config.waiter_ttl_s * 1000),
                        ],
                    )
                except REDIS_UNAVAILABLE_ERRORS as exc:
                    redis_failures += 1
                    self._metrics.redis_errors.inc()
                    delay_s = random.uniform(
                        0, min(self._config.redis_retry_max_s, 0.05 * 2**redis_failures)
                    )
                    log.warning("permits_limiter_redis_unavailable", bound=self._keys.tag, error=str(exc), retry_in_s=delay_s)
                    await asyncio.sleep(delay_s)
                    continue
                # Before acting on the reply: a cancelled caller gives a granted permit back.
                _raise_if_cancel_was_swallowed(task, cancels_before)
                redis_failures = 0
                granted, pause_left_ms, rank, holders, waiters, reclaimed = (int(v) for v in reply)
                self._metrics.permits_in_use.set(holders)
                self._metrics.queue_depth_cluster.set(waiters)
                if reclaimed:
                    self._metrics.leases_reclaimed.inc(reclaimed)
                    log.warning("permits_expired_leases_reclaimed", bound=self._keys.tag, count=reclaimed)
                if granted:
                    waited_s = time.monotonic() - started
                    self._metrics.wait_seconds.labels(self._model).observe(waited_s)
                    return waited_s
                await self._sleep_before_poll(pause_left_ms / 1000, rank)
        except BaseException:
            # Leave the queue (and drop a permit granted by a reply we never saw).
            await asyncio.shield(self._give_back(holder_id))
            raise
        finally:
            self._local_waiters -= 1
            self._metrics.queue_depth_process.set(self._local_waiters)

    async def _sleep_before_poll(self, pause_left_s: float, rank: int) -> None:
        heartbeat_s = self._config.waiter_ttl_s / 3
        if pause_left_s > 0:
            # Everyone wakes when the pause ends; tickets keep the order.
            delay_s = min(pause_left_s + random.uniform(0, 0.01), heartbeat_s)
        else:
            behind = max(0, rank - self._config.limit + 1)
            base_s = min(self._config.tail_poll_max_s, self._config.head_poll_s * (1 + behind))
            delay_s = min(random.uniform(0.5, 1.5) * base_s, heartbeat_s)
            # A release in this process wakes its waiters at once. asyncio.timeout, not
            # wait_for: on 3.11 wait_for loses a cancel that arrives with the wake-up.
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay_s):
                    await self._wake.wait()
            return
        await asyncio.sleep(delay_s)

    async def _keep_lease(self, permit: Permit) -> None:
        lease_s = self._config.lease_s
        last_renewed = time.monotonic()
        task = _current_task()
        while True:
            _raise_if_cancel_was_swallowed(task, 0)
            await asyncio.sleep(lease_s / 3)
            try:
                kept = await self._renew(
                    keys=[self._keys.holders], args=[permit.holder_id, int(lease_s * 1000)]
                )
            except REDIS_UNAVAILABLE_ERRORS as exc:
                self._metrics.redis_errors.inc()
                log.warning("permits_lease_renewal_failed", bound=self._keys.tag, error=str(exc))
                if time.monotonic() - last_renewed < lease_s:
                    continue
                kept = 0
            if not kept:
                self._metrics.leases_lost.inc()
                log.error("llm_lease_lost", holder_id=permit.holder_id)
                permit.lost.set()
                return
            last_renewed = time.monotonic()

    async def _give_back(self, holder_id: str) -> None:
        try:
            await self._release(
                keys=[self._keys.holders, self._keys.queue, self._keys.heartbeats], args=[holder_id]
            )
        except REDIS_UNAVAILABLE_ERRORS as exc:
            # The lease expires on its own within lease_s.
            self._metrics.redis_errors.inc()
            log.warning("permits_permit_release_failed", bound=self._keys.tag, error=str(exc), holder_id=holder_id)
        self._wake.set()

    # --- shared pause

    async def pause_for(self, delay_s: float) -> float:
        """Make every process wait ``delay_s`` (unless a later pause is set); the pause left."""
        if delay_s <= 0:
            return 0.0
        for attempt in range(5):
            try:
                left_ms = await self._pause(
                    keys=[self._keys.pause_until], args=[int(delay_s * 1000)]
                )
                return int(left_ms) / 1000
            except REDIS_UNAVAILABLE_ERRORS as exc:
                self._metrics.redis_errors.inc()
                log.warning("permits_pause_set_failed", bound=self._keys.tag, error=str(exc), attempt=attempt)
                await asyncio.sleep(random.uniform(0, 0.1 * 2**attempt))
        return 0.0

    async def state(self) -> dict[str, Any]:
        """Holders, waiters and pause left, for status pages and tests."""
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.zcard(self._keys.holders)
            pipe.zcard(self._keys.queue)
            pipe.pttl(self._keys.pause_until)
            holders, waiters, pause_ttl_ms = await pipe.execute()
        return {
            "permits_in_use": int(holders),
            "waiters": int(waiters),
            "pause_left_s": max(0, int(pause_ttl_ms)) / 1000,
        }
