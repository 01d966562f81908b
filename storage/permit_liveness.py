"""Process liveness for the permit semaphore: a dead process's permits are freed in seconds.

A started :class:`storage.permits.ClusterLimiter` keeps a record in
``<prefix>:{<tag>}:permits:processes`` (member = its process id, score = the record's
expiry in Redis server time), renewed every ``heartbeat_s`` for ``liveness_s``. Its
holder and waiter ids start with that process id. Every script that reads the semaphore
(acquire, this heartbeat, state) first drops the holders and queued waiters of processes
whose record has expired (``permits_reap.lua``), so a process killed with SIGKILL holds
its permits for about ``liveness_s``, not for its whole lease; the lease stays the
backstop for a live process that stalls.

The other side of the same rule: a process whose heartbeats do not reach Redis keeps its
permits only while its record is live. When a heartbeat finds one of its permits gone,
or its record is about to expire (by its own conservative clock: the send time of its
last answered heartbeat, plus ``liveness_s``, less one ``heartbeat_s`` so the holder
knows before any other process can take its permit), those permits are marked lost
(``Permit.lost``), as a failed lease renewal does.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import structlog

from storage.permit_types import (
    LimiterConfig,
    LimiterKeys,
    Permit,
    PermitMetrics,
    current_task,
    mark_lost,
    raise_if_cancel_was_swallowed,
)
from storage.redis_client import REDIS_UNAVAILABLE_ERRORS, RedisClient, lua_source

log = structlog.get_logger(__name__)

#: A heartbeat that fails with one of these is retried by the next beat.
_HEARTBEAT_ERRORS: tuple[type[Exception], ...] = (*REDIS_UNAVAILABLE_ERRORS, TimeoutError)


def reaping_script(name: str) -> str:
    """The source of ``lua/<name>`` behind the shared head that defines ``reap()``."""
    return lua_source(__file__, "permits_reap.lua") + "\n" + lua_source(__file__, name)


def report_reaped(metrics: PermitMetrics, tag: str, reaped: list[Any]) -> None:
    """Count and log what a script's ``reap()`` freed: ``[expired_leases, dead_holders,
    dead_waiters, dead_processes]``. Freed permits of dead processes count as reclaimed
    leases too (``leases_reclaimed``)."""
    expired, dead_holders, dead_waiters = (int(v) for v in reaped[:3])
    dead = reaped[3]
    if expired:
        metrics.leases_reclaimed.inc(expired)
        log.warning("permits_expired_leases_reclaimed", bound=tag, count=expired)
    if dead:
        if dead_holders:
            metrics.leases_reclaimed.inc(dead_holders)
        log.warning(
            "permits_dead_processes_reaped", bound=tag, processes=list(dead),
            permits_freed=dead_holders, waiters_dropped=dead_waiters,
        )


class ProcessLiveness:
    """The liveness record of one limiter (one per limiter per process) and its heartbeat.

    ``start()`` registers the record (when Redis answers) and starts the one heartbeat task;
    ``close()`` stops it and removes the record. ``held`` is the limiter's permits, which a
    lapsed record marks lost.
    """

    def __init__(
        self, redis: RedisClient, keys: LimiterKeys, config: LimiterConfig,
        metrics: PermitMetrics, process_id: str,
    ) -> None:
        self._redis = redis
        self._keys = keys
        self._config = config
        self._metrics = metrics
        self.process_id = process_id
        self.held: set[Permit] = set()
        self._heartbeat = redis.register_script(reaping_script("permits_heartbeat.lua"))
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        #: ``time.monotonic()`` a heartbeat before the record may expire: this process's
        #: permits count as lost from then; None before the first answered heartbeat
        #: (permits taken before then are lease-only).
        self._expires_monotonic_s: float | None = None

    async def start(self) -> None:
        """Register the record (one attempt: Redis down must not stop the process from
        starting; the loop keeps trying) and start the heartbeat."""
        if self._task is not None or self._closed:
            raise RuntimeError("a limiter's liveness is started once, before close()")
        await self._beat()
        self._task = asyncio.create_task(
            self._run(), name=f"permits-liveness-{self._keys.tag}-{self.process_id}"
        )

    async def close(self) -> None:
        """Stop the heartbeat and remove the record. Permits still held here fall back to
        their leases (they are given back by their own ``permit()`` exits)."""
        if self._closed:
            return
        self._closed = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.wait([task])
        try:
            await self._redis.zrem(self._keys.processes, self.process_id)
        except REDIS_UNAVAILABLE_ERRORS as exc:
            # It expires on its own within liveness_s.
            self._metrics.redis_errors.inc()
            log.warning(
                "permits_process_record_removal_failed", bound=self._keys.tag, error=str(exc)
            )

    async def _run(self) -> None:
        task = current_task()
        while True:
            raise_if_cancel_was_swallowed(task, 0)
            await asyncio.sleep(self._until_next_beat_s())
            await self._beat()

    def _until_next_beat_s(self) -> float:
        """A heartbeat from now, or sooner: when the record would lapse before then, the beat
        at its expiry is the one that finds the permits lost (if it fails)."""
        wait_s = self._config.heartbeat_s
        if self._expires_monotonic_s is not None:
            left_s = self._expires_monotonic_s - time.monotonic()
            if left_s > 0:
                wait_s = min(wait_s, left_s)
        return wait_s

    async def _beat(self) -> None:
        sent = time.monotonic()
        # Never wait past the record's expiry for an answer: by then the permits are lost.
        # Unregistered (or lapsed), a slow answer loses nothing: give it a whole liveness.
        timeout_s = self._config.liveness_s
        if self._expires_monotonic_s is not None and self._expires_monotonic_s > sent:
            timeout_s = self._expires_monotonic_s - sent
        try:
            async with asyncio.timeout(timeout_s):
                reply = await self._heartbeat(
                    keys=[self._keys.holders, self._keys.queue, self._keys.heartbeats,
                          self._keys.processes],
                    args=[self.process_id, int(self._config.liveness_s * 1000)],
                )
        except _HEARTBEAT_ERRORS as exc:
            self._metrics.redis_errors.inc()
            log.warning(
                "permits_heartbeat_failed", bound=self._keys.tag, error=str(exc) or repr(exc)
            )
            self._lose_all_if_lapsed()
            return
        except Exception:
            # A background loop logs and carries on; the record still lapses if this repeats.
            log.exception("permits_heartbeat_error", bound=self._keys.tag)
            self._lose_all_if_lapsed()
            return
        # The script ran after ``sent``: the record lives at least liveness_s from then. One
        # heartbeat less, so this process gives up before any other can reap it.
        self._expires_monotonic_s = sent + self._config.liveness_s - self._config.heartbeat_s
        report_reaped(self._metrics, self._keys.tag, reply[:4])
        still_held = set(reply[4])
        for permit in list(self.held):
            # A permit granted after ``sent`` may postdate the script's view of the holders.
            if permit.granted_monotonic_s < sent and permit.holder_id not in still_held:
                mark_lost(permit, self._metrics, self._keys.tag, "reclaimed")

    def _lose_all_if_lapsed(self) -> None:
        expires_s = self._expires_monotonic_s
        if expires_s is not None and time.monotonic() >= expires_s:
            # Another process may reap them any moment now (or already has).
            for permit in list(self.held):
                mark_lost(permit, self._metrics, self._keys.tag, "process_record_expired")
