"""What the permit semaphore (:mod:`storage.permits`) and its liveness heartbeat
(:mod:`storage.permit_liveness`) share: keys, configuration, the metrics protocol, the
``Permit`` handle, and the guard against cancellations that an await swallowed.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Protocol

import structlog

log = structlog.get_logger(__name__)


def raise_if_cancel_was_swallowed(task: asyncio.Task[Any], cancels_before: int) -> None:
    """Raise the ``CancelledError`` of a ``task.cancel()`` since ``cancels_before`` that an
    await returned from without raising (see :mod:`storage.permits`): a cancelled waiter
    must not poll on, and a cancelled renewer or heartbeat must end, or whoever awaits them
    waits forever."""
    if task.cancelling() > cancels_before:
        raise asyncio.CancelledError


def current_task() -> asyncio.Task[Any]:
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
    ``echo_transcription_*``) and hands an object with these attributes.

    ``leases_reclaimed`` counts every permit freed for a holder that could not give it
    back: leases past their expiry and the permits of dead processes alike (the log events
    ``permits_expired_leases_reclaimed`` and ``permits_dead_processes_reaped`` tell them
    apart). ``leases_lost`` counts this process's permits lost during their call.
    """

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
    #: ZSET process id -> liveness expiry (Redis server time, ms): the holders and waiters
    #: of a process whose record expired are dropped (ids are ``<process id>:<suffix>``).
    processes: str
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
            processes=f"{base}:permits:processes",
            tag=tag,
        )

    def all(self) -> list[str]:
        """The acquire script's keys, in its order."""
        return [
            self.holders, self.queue, self.heartbeats, self.tickets, self.pause_until,
            self.processes,
        ]


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
    #: A started limiter's process record lives this long past its last heartbeat: a killed
    #: process's permits and queue places are freed this long after its last heartbeat.
    #: Several heartbeats long, so a busy event loop or a slow Redis reply is no death.
    liveness_s: float = 5.0
    #: How often a started limiter renews its process record.
    heartbeat_s: float = 1.0

    def __post_init__(self) -> None:
        if not 0 < self.heartbeat_s < self.liveness_s:
            raise ValueError("heartbeat_s must be positive and shorter than liveness_s")


class Permit:
    """A held permit. ``lost`` is set when its lease could not be kept (renewal failed, or
    its process record expired): the permit may already be someone else's."""

    def __init__(self, holder_id: str, waited_s: float, granted_monotonic_s: float) -> None:
        self.holder_id = holder_id
        self.waited_s = waited_s
        #: ``time.monotonic()`` when the grant arrived: the grant's script ran before it.
        self.granted_monotonic_s = granted_monotonic_s
        self.lost = asyncio.Event()


def mark_lost(permit: Permit, metrics: PermitMetrics, tag: str, reason: str) -> None:
    """Tell the holder its permit is gone (once), count and log it."""
    if permit.lost.is_set():
        return
    metrics.leases_lost.inc()
    log.error("permits_lease_lost", bound=tag, holder_id=permit.holder_id, reason=reason)
    permit.lost.set()
