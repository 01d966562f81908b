"""A cluster-wide counting semaphore of leased permits, and a shared "pause until", on Redis.

It bounds calls to a provider across every process: the LLM layer (``{llm}``
keys) and transcription (``{transcription}`` keys) each own one, with metrics of
their own that follow :class:`PermitMetrics`.

A permit is a lease: a member of a sorted set scored by its expiry in Redis
server time (``TIME`` inside the scripts, so process clocks never matter). A
holder renews it every third of the lease while its call runs and removes it
in a cancellation-safe ``finally``.

A started limiter also keeps a liveness record for its process, renewed every
``heartbeat_s`` (:mod:`storage.permit_liveness`); holder and waiter ids carry
its process id. Every script that reads the semaphore first drops the permits
and queue places of processes whose record has expired, so a killed process's
permits are free again after ``liveness_s`` (seconds), not after their lease.
The lease stays the backstop for a live process that stalls, and for holders
of a process with no record (a limiter never started, or an older version).

Waiters queue in ticket order (first come, first served) and keep their place
with a heartbeat (their polls); a waiter of a dead process drops out with its
process's record, any other silent waiter after ``waiter_ttl_s``. Waiting
polls Redis with short jittered sleeps near the head of the queue and longer
ones further back; a release in this process wakes its own waiters at once.

If Redis cannot be reached, acquiring waits and retries: there is no
per-process fallback that would multiply the bound.

Cancellation always ends a wait, a hold, a lease renewer and the heartbeat, even when an await
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
from types import TracebackType
from typing import Any, Self

import structlog

from storage.permit_liveness import ProcessLiveness, reaping_script, report_reaped
from storage.permit_types import (
    LimiterConfig,
    LimiterKeys,
    Permit,
    PermitMetrics,
    PermitUnavailable,
    current_task,
    mark_lost,
    raise_if_cancel_was_swallowed,
)
from storage.redis_client import REDIS_UNAVAILABLE_ERRORS, RedisClient, lua_source

__all__ = [
    "ClusterLimiter", "LimiterConfig", "LimiterKeys", "Permit", "PermitMetrics",
    "PermitUnavailable",
]

log = structlog.get_logger(__name__)


def _lua(name: str) -> str:
    return lua_source(__file__, name)


class ClusterLimiter:
    """At most ``config.limit`` permits held across every process sharing ``redis``.

    Its owner calls :meth:`start` and :meth:`close` (or ``async with limiter:``) around its
    use: while started, the limiter's process liveness record is kept, so the permits and
    queue places of a process that dies are freed after ``config.liveness_s`` rather than
    after their lease (:mod:`storage.permit_liveness`). A limiter that is not started
    (unit tests) or already closed still bounds calls, with leases as the only reclaim.
    """

    def __init__(
        self,
        redis: RedisClient,
        keys: LimiterKeys,
        config: LimiterConfig,
        metrics: PermitMetrics,
        *,
        model: str = "",
    ) -> None:
        self._keys = keys
        self._config = config
        self._metrics = metrics
        self._model = model
        # Holder and waiter ids start with it (``<process id>:<hex>``): the reaping script
        # finds a dead process's permits by it. One per limiter, so it names this
        # limiter's liveness record.
        self._process_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self._liveness = ProcessLiveness(redis, keys, config, metrics, self._process_id)
        self._acquire = redis.register_script(reaping_script("permits_acquire.lua"))
        self._state = redis.register_script(reaping_script("permits_state.lua"))
        self._renew = redis.register_script(_lua("permits_renew.lua"))
        self._release = redis.register_script(_lua("permits_release.lua"))
        self._pause = redis.register_script(_lua("permits_pause.lua"))
        self._local_waiters = 0
        self._wake = asyncio.Event()

    @property
    def config(self) -> LimiterConfig:
        return self._config

    @property
    def process_id(self) -> str:
        """The id of this limiter's liveness record (and the prefix of its holder ids)."""
        return self._process_id

    # --- lifecycle

    async def start(self) -> None:
        """Register this process's liveness record and start its heartbeat (one task)."""
        await self._liveness.start()

    async def close(self) -> None:
        """Stop the heartbeat and remove the record; idempotent."""
        await self._liveness.close()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # --- permits

    @contextlib.asynccontextmanager
    async def permit(self, deadline: float | None = None) -> AsyncIterator[Permit]:
        """Wait (FIFO, pause respected) for a permit, hold it with renewals, then release it.

        ``deadline`` is a ``time.monotonic()`` value; past it, :class:`PermitUnavailable`.
        """
        holder_id = f"{self._process_id}:{uuid.uuid4().hex}"
        waited_s = await self._wait_for_permit(holder_id, deadline)
        permit = Permit(holder_id, waited_s, time.monotonic())
        held = self._liveness.held
        held.add(permit)
        self._metrics.permits_held_process.set(len(held))
        renewer = asyncio.create_task(
            self._keep_lease(permit), name=f"permits-lease-{self._keys.tag}-{holder_id}"
        )
        try:
            yield permit
        finally:
            renewer.cancel()
            held.discard(permit)
            self._metrics.permits_held_process.set(len(held))
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
        task = current_task()
        cancels_before = task.cancelling()
        try:
            while True:
                raise_if_cancel_was_swallowed(task, cancels_before)
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
                    log.warning(
                        "permits_limiter_redis_unavailable",
                        bound=self._keys.tag, error=str(exc), retry_in_s=delay_s,
                    )
                    await asyncio.sleep(delay_s)
                    continue
                # Before acting on the reply: a cancelled caller gives a granted permit back.
                raise_if_cancel_was_swallowed(task, cancels_before)
                redis_failures = 0
                granted, pause_left_ms, rank, holders, waiters = (int(v) for v in reply[:5])
                self._metrics.permits_in_use.set(holders)
                self._metrics.queue_depth_cluster.set(waiters)
                report_reaped(self._metrics, self._keys.tag, reply[5:])
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
        # Polls are the waiter's heartbeat: three of them per waiter_ttl_s keep its place.
        waiter_heartbeat_s = self._config.waiter_ttl_s / 3
        if pause_left_s > 0:
            # Everyone wakes when the pause ends; tickets keep the order.
            delay_s = min(pause_left_s + random.uniform(0, 0.01), waiter_heartbeat_s)
        else:
            behind = max(0, rank - self._config.limit + 1)
            base_s = min(self._config.tail_poll_max_s, self._config.head_poll_s * (1 + behind))
            delay_s = min(random.uniform(0.5, 1.5) * base_s, waiter_heartbeat_s)
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
        task = current_task()
        while not permit.lost.is_set():  # lost (e.g. its process record lapsed): nothing to keep
            raise_if_cancel_was_swallowed(task, 0)
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
                mark_lost(permit, self._metrics, self._keys.tag, "lease_not_renewed")
                return
            last_renewed = time.monotonic()

    async def _give_back(self, holder_id: str) -> None:
        try:
            await self._release(
                keys=[self._keys.holders, self._keys.queue, self._keys.heartbeats], args=[holder_id]
            )
        except REDIS_UNAVAILABLE_ERRORS as exc:
            # The lease expires on its own within lease_s (the record within liveness_s if
            # this process dies).
            self._metrics.redis_errors.inc()
            log.warning(
                "permits_permit_release_failed",
                bound=self._keys.tag, error=str(exc), holder_id=holder_id,
            )
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
                log.warning(
                    "permits_pause_set_failed",
                    bound=self._keys.tag, error=str(exc), attempt=attempt,
                )
                await asyncio.sleep(random.uniform(0, 0.1 * 2**attempt))
        return 0.0

    async def state(self) -> dict[str, Any]:
        """Holders, waiters and pause left, for status pages and tests; the permits and
        places of dead processes (and expired leases) are freed first, never counted."""
        reply = await self._state(
            keys=[self._keys.holders, self._keys.queue, self._keys.heartbeats,
                  self._keys.processes, self._keys.pause_until],
        )
        report_reaped(self._metrics, self._keys.tag, reply[3:])
        return {
            "permits_in_use": int(reply[0]),
            "waiters": int(reply[1]),
            "pause_left_s": int(reply[2]) / 1000,
        }
