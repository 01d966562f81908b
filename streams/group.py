"""What the loops of one consumer group share: clients, keys, resolved limits, and entries.

Delivery and housekeeping of a group both work from one :class:`GroupContext`
(built once per group by the runtime) and exchange :class:`Entry` values.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from streams.attempts import History
from streams.config import StreamsConfig
from streams.metrics import StreamMetrics
from streams.names import StreamKeys, StreamNames
from streams.redis_types import RedisClient
from streams.scripts import Scripts
from streams.spec import GroupSpec

#: The history of an entry with no recorded start (immutable, so shared).
NEVER_STARTED = History()


@dataclass(slots=True)
class Entry:
    """A stream entry held by this consumer, with its raw delivery count and the started
    attempts recorded before it was taken (read only when ``deliveries > 1``)."""

    entry_id: str
    fields: dict[str, str]
    deliveries: int
    history: History = NEVER_STARTED
    #: A start marker of this run may be in Redis: its field goes with the ack.
    marked: bool = False


def _pairs(flat: Sequence[Any]) -> dict[str, str]:
    return {str(flat[i]): str(flat[i + 1]) for i in range(0, len(flat), 2)}


def entries_from_flat(flat: Sequence[Any]) -> list[Entry]:
    """The entries of a script's ``{id, fields, deliveries, attempts marker, ...}`` reply."""
    return [
        Entry(str(flat[i]), _pairs(flat[i + 1]), int(flat[i + 2]), History.parse(flat[i + 3]))
        for i in range(0, len(flat), 4)
    ]


@dataclass(frozen=True, slots=True)
class GroupContext:
    """One group in this process: its spec, with ``None`` limits resolved from the config."""

    redis: RedisClient
    scripts: Scripts
    names: StreamNames
    keys: StreamKeys
    spec: GroupSpec
    config: StreamsConfig
    metrics: StreamMetrics
    #: This process's consumer name in the group.
    consumer: str
    concurrency: int
    #: Entries held beyond the running ones, at most (read ahead, queued for the workers).
    prefetch: int
    lease_s: float
    max_deliveries: int

    @classmethod
    def resolve(
        cls,
        spec: GroupSpec,
        *,
        redis: RedisClient,
        scripts: Scripts,
        names: StreamNames,
        config: StreamsConfig,
        metrics: StreamMetrics,
        consumer: str,
    ) -> GroupContext:
        return cls(
            redis=redis, scripts=scripts, names=names, keys=names.keys(spec.stream), spec=spec,
            config=config, metrics=metrics, consumer=consumer,
            concurrency=spec.concurrency or config.concurrency,
            prefetch=spec.prefetch if spec.prefetch is not None else config.prefetch,
            lease_s=spec.lease_s or config.lease_s,
            max_deliveries=spec.max_deliveries or config.max_deliveries,
        )

    @property
    def labels(self) -> tuple[str, str]:
        """The metric labels (stream, group)."""
        return (self.spec.stream, self.spec.group)

    @property
    def name(self) -> str:
        """``stream/group``, for task names and logs."""
        return f"{self.spec.stream}/{self.spec.group}"

    def error_field(self, entry_id: str) -> str:
        return StreamNames.error_field(self.spec.group, entry_id)
