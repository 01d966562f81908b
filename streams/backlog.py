"""The backlog report: one row per stream and group, for operators and the gauges.

Redis 7.0 reports a group's ``lag`` as nil when it cannot tell how many
entries the group has read (``entries-read`` unknown: after a restart, or an
``XGROUP SETID`` without ``ENTRIESREAD``) and its last-delivered id lies inside
the stream; it stays nil until the group catches up. Then the entries after
the last-delivered id are counted here (XRANGE, paged, at most
:data:`LAG_COUNT_CAP`; a count that hit the cap is reported as such).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Literal

from redis.exceptions import ResponseError

from streams.names import StreamNames
from streams.redis_types import RedisClient

#: Where a row's ``lag`` comes from: ``redis`` (XINFO GROUPS), ``counted`` (Redis had none),
#: ``capped`` (counted up to the cap: the lag is at least that), ``""`` (no group).
LagSource = Literal["redis", "counted", "capped", ""]


@dataclass(frozen=True, slots=True)
class BacklogRow:
    """One stream and group's backlog figures (a row of the report and of the admin API)."""

    stream: str
    group: str
    length: int
    #: Entries not yet delivered to the group (None if there is no group).
    lag: int | None
    pending: int
    oldest_pending_age_s: float
    consumers: int
    dead_letters: int
    delayed: int
    lag_source: LagSource = ""


#: Most entries counted for one group's lag when Redis reports none.
LAG_COUNT_CAP = 10_000
#: Entries per XRANGE page while counting.
LAG_COUNT_PAGE = 1000


def _id_ms(entry_id: str) -> int:
    return int(entry_id.split("-", 1)[0])


async def count_after(
    redis: RedisClient, stream: str, after_id: str, *, cap: int = LAG_COUNT_CAP,
    page: int = LAG_COUNT_PAGE,
) -> tuple[int, bool]:
    """How many entries of ``stream`` come after ``after_id`` (exclusive), counting at most
    ``cap``; and whether the cap was hit (then there may be more)."""
    count, start = 0, f"({after_id}"
    while True:
        want = min(page, cap - count)
        if want <= 0:
            # At the cap: one more look tells whether anything lies beyond.
            return count, bool(await redis.xrange(stream, min=start, max="+", count=1))
        batch = await redis.xrange(stream, min=start, max="+", count=want) or []
        count += len(batch)
        if len(batch) < want:
            return count, False
        last_id = batch[-1][0]
        start = "(" + (last_id.decode() if isinstance(last_id, bytes) else str(last_id))


async def _group_lag(
    redis: RedisClient, stream: str, group: dict[str, object], cap: int
) -> tuple[int, LagSource]:
    lag = group.get("lag")
    if lag is not None:
        return int(str(lag)), "redis"
    count, capped = await count_after(redis, stream, str(group["last-delivered-id"]), cap=cap)
    return count, "capped" if capped else "counted"


async def backlog_rows(
    redis: RedisClient, names: StreamNames, streams: Iterable[str], *,
    lag_count_cap: int = LAG_COUNT_CAP,
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
            lag, source = await _group_lag(redis, keys.stream, g, lag_count_cap)
            rows.append(BacklogRow(
                stream=name, group=g["name"], length=length, lag=lag,
                pending=int(g["pending"]), oldest_pending_age_s=round(age_s, 3),
                consumers=int(g["consumers"]), dead_letters=dead, delayed=delayed,
                lag_source=source,
            ))
    return rows


def _lag_cell(row: BacklogRow) -> str:
    if row.lag is None:
        return "?"
    return f">={row.lag}" if row.lag_source == "capped" else str(row.lag)


def format_rows(rows: list[BacklogRow], *, as_json: bool = False) -> str:
    """Text table (one line per stream and group) or a JSON array."""
    if as_json:
        return json.dumps([asdict(r) for r in rows], indent=2)
    header = ("stream", "group", "length", "lag", "pending", "oldest_s", "consumers", "dead",
              "delayed")
    lines = [header] + [
        (r.stream, r.group, str(r.length), _lag_cell(r), str(r.pending),
         f"{r.oldest_pending_age_s:.1f}", str(r.consumers), str(r.dead_letters), str(r.delayed))
        for r in rows
    ]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip() for line in lines
    )
