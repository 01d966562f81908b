"""The backlog report: one row per stream and group, for operators and the gauges."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass

from redis.exceptions import ResponseError

from streams.names import StreamNames
from streams.redis_types import RedisClient


@dataclass(frozen=True, slots=True)
class BacklogRow:
    stream: str
    group: str
    length: int
    #: Entries not yet delivered to the group (None if Redis cannot tell).
    lag: int | None
    pending: int
    oldest_pending_age_s: float
    consumers: int
    dead_letters: int
    delayed: int


def _id_ms(entry_id: str) -> int:
    return int(entry_id.split("-", 1)[0])


async def backlog_rows(
    redis: RedisClient, names: StreamNames, streams: Iterable[str]
) -> list[BacklogRow]:
    """Figures of every group of each of ``streams`` (logical names, e.g. the application's
    catalogue).

    A stream without groups yields one row with group ``-``.
    """
    seconds, micros = await redis.time()
    now_ms = int(seconds) * 1000 + int(micros) // 1000
    rows = []
    for keys in names.catalogue(streams):
        name = keys.name
        async with redis.pipeline(transaction=False) as pipe:
            pipe.xlen(keys.stream)
            pipe.xlen(keys.dead)
            pipe.zcard(keys.delayed)
            length, dead, delayed = await pipe.execute()
        try:
            groups = await redis.xinfo_groups(keys.stream)
        except ResponseError:  # no such key
            groups = []
        if not groups:
            rows.append(BacklogRow(name, "-", length, None, 0, 0.0, 0, dead, delayed))
            continue
        for g in groups:
            summary = await redis.xpending(keys.stream, g["name"])
            oldest = summary.get("min")
            age_s = max(0.0, (now_ms - _id_ms(oldest)) / 1000) if oldest else 0.0
            lag = g.get("lag")
            rows.append(BacklogRow(
                stream=name, group=g["name"], length=length,
                lag=int(lag) if lag is not None else None,
                pending=int(g["pending"]), oldest_pending_age_s=round(age_s, 3),
                consumers=int(g["consumers"]), dead_letters=dead, delayed=delayed,
            ))
    return rows


def format_rows(rows: list[BacklogRow], *, as_json: bool = False) -> str:
    """Text table (one line per stream and group) or a JSON array."""
    if as_json:
        return json.dumps([asdict(r) for r in rows], indent=2)
    header = ("stream", "group", "length", "lag", "pending", "oldest_s", "consumers", "dead",
              "delayed")
    lines = [header] + [
        (r.stream, r.group, str(r.length), "?" if r.lag is None else str(r.lag), str(r.pending),
         f"{r.oldest_pending_age_s:.1f}", str(r.consumers), str(r.dead_letters), str(r.delayed))
        for r in rows
    ]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip() for line in lines
    )
