"""The consumer runtime: runs consumer groups in this process, each as delivery + housekeeping.

Per group there is a fixed set of long-lived tasks (:mod:`streams.delivery`:
reader, workers, acker, lease renewer; :mod:`streams.housekeeping`: one loop),
never a task per message. Every Redis step that must not be half-done
(dead-letter move, deferral, delayed move, trimming) is one Lua script. Redis
outages make the loops log, back off (capped) and carry on; a lost group
(NOGROUP) is created again (:mod:`streams.loops`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections.abc import Sequence

import structlog
from prometheus_client import CollectorRegistry

from streams.config import StreamsConfig
from streams.delivery import Delivery
from streams.group import GroupContext
from streams.housekeeping import Housekeeping, ensure_group
from streams.metrics import StreamMetrics
from streams.names import StreamNames
from streams.redis_types import REDIS_UNAVAILABLE_ERRORS, RedisClient
from streams.scripts import Scripts
from streams.spec import GroupSpec

log = structlog.get_logger(__name__)


def default_consumer_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class GroupRunner:
    """One consumer group in this process: its delivery and its housekeeping, started and
    stopped together."""

    def __init__(self, ctx: GroupContext) -> None:
        self.ctx = ctx
        self.delivery = Delivery(ctx, recreate_group=self.ensure_group)
        self.housekeeping = Housekeeping(ctx, self.delivery)

    @property
    def spec(self) -> GroupSpec:
        return self.ctx.spec

    @property
    def concurrency(self) -> int:
        return self.ctx.concurrency

    async def ensure_group(self) -> None:
        await ensure_group(self.ctx)

    def start(self) -> None:
        self.delivery.start()
        self.housekeeping.start()

    async def stop(self, deadline: float) -> None:
        """Stop intake, let running handlers finish until ``deadline``, release the rest."""
        # Reader and housekeeping both queue entries: both stop before delivery drains.
        await asyncio.gather(self.delivery.stop_intake(), self.housekeeping.stop())
        await self.delivery.drain(deadline)


class ConsumerRuntime:
    """Runs the consumer groups of ``specs`` in this process.

    ``start()`` creates the groups (idempotently) and starts the loops;
    ``stop(grace_s)`` stops reading, gives running handlers ``grace_s`` to
    finish, releases everything else to the other consumers and flushes acks.
    """

    def __init__(
        self,
        redis: RedisClient,
        config: StreamsConfig,
        registry: CollectorRegistry,
        specs: Sequence[GroupSpec],
        *,
        consumer_name: str | None = None,
    ) -> None:
        pairs = [(s.stream, s.group) for s in specs]
        if len(set(pairs)) != len(pairs):
            raise ValueError("a group is listed twice")
        self.redis = redis
        self.config = config
        self.names = StreamNames(config.key_prefix)
        self.consumer = consumer_name or config.consumer_name or default_consumer_name()
        self.metrics = StreamMetrics(registry)
        self.scripts = Scripts.load(redis)
        self.groups = [
            GroupRunner(GroupContext.resolve(
                spec, redis=redis, scripts=self.scripts, names=self.names, config=config,
                metrics=self.metrics, consumer=self.consumer,
            ))
            for spec in specs
        ]
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
                 groups=[group.ctx.name for group in self.groups])

    async def stop(self, grace_s: float | None = None) -> None:
        if not self._started:
            return
        self._started = False
        grace = self.config.shutdown_grace_s if grace_s is None else grace_s
        deadline = time.monotonic() + grace
        await asyncio.gather(*(g.stop(deadline) for g in self.groups))
        log.info("stream_consumers_stopped", consumer=self.consumer)
