"""Auto-select jobs: their state in Redis and the work of running them.

A job is one hash ``<prefix>:{job:<id>}`` with ``status`` (queued, running,
completed), ``batches_total``, ``batches_done`` and one ``batch:<i>`` field
per finished batch (its :class:`~llm.selection.BatchResult` as JSON).
Recording a batch is one Lua script, idempotent per batch index, so a
redelivered batch never counts twice; the last batch marks the job
completed. The merged selection is computed on read, in batch order.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from llm.client import BoundedLlm
from llm.keys import job_key
from llm.selection import BatchResult, Item, merge_selected, select_batch
from storage.redis_client import RedisClient, lua_source

JOB_TTL_S = 7 * 24 * 3600


def _lua(name: str) -> str:
    return lua_source(__file__, name)


@dataclass(frozen=True, slots=True)
class JobView:
    """What ``GET /api/jobs/{job_id}`` answers."""

    job_id: str
    data: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return self.data


class JobStore:
    """Auto-select job state in Redis."""

    def __init__(self, redis: RedisClient, *, key_prefix: str = "echo") -> None:
        self._redis = redis
        self._prefix = key_prefix
        self._record = redis.register_script(_lua("record_batch.lua"))
        self._start = redis.register_script(_lua("start_job.lua"))

    def key(self, job_id: str) -> str:
        return job_key(self._prefix, job_id)

    async def create(
        self, *, project_id: str, query: str, language: str | None, job_id: str | None = None
    ) -> str:
        """A new queued job; returns its id."""
        job_id = job_id or uuid.uuid4().hex
        key = self.key(job_id)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(
                key,
                mapping={
                    "job_id": job_id,
                    "kind": "auto_select",
                    "status": "queued",
                    "project_id": project_id,
                    "query": query,
                    "language": language or "",
                    "batches_total": 0,
                    "batches_done": 0,
                    "created_at": f"{time.time():.3f}",
                },
            )
            pipe.expire(key, JOB_TTL_S)
            await pipe.execute()
        return job_id

    async def start(
        self, job_id: str, *, plan: Sequence[Sequence[str]], provider: str, model: str
    ) -> list[list[str]]:
        """Queued -> running with its plan (conversation ids per batch), once.

        Returns the plan in force: a redelivered request gets the first plan back,
        so batch indexes keep their meaning. Raises KeyError for an unknown job.
        """
        reply = await self._start(
            keys=[self.key(job_id)],
            args=[
                len(plan),
                json.dumps([list(ids) for ids in plan], separators=(",", ":")),
                provider,
                model,
                f"{time.time():.3f}",
                JOB_TTL_S,
            ],
        )
        if reply is None:
            raise KeyError(job_id)
        return [list(ids) for ids in json.loads(reply)]

    async def status(self, job_id: str) -> str | None:
        value = await self._redis.hget(self.key(job_id), "status")
        return None if value is None else str(value)

    async def done_batches(self, job_id: str) -> frozenset[int]:
        fields = await self._redis.hkeys(self.key(job_id))
        names = [str(f) for f in fields]
        return frozenset(int(f.split(":", 1)[1]) for f in names if f.startswith("batch:"))

    async def record_batch(self, job_id: str, result: BatchResult) -> bool:
        """Store one batch's result once; True if this call recorded it."""
        added, _done, _total = await self._record(
            keys=[self.key(job_id)],
            args=[
                result.index,
                json.dumps(result.to_json(), separators=(",", ":")),
                f"{time.time():.3f}",
                JOB_TTL_S,
            ],
        )
        return bool(int(added))

    async def get(self, job_id: str) -> JobView | None:
        raw = await self._redis.hgetall(self.key(job_id))
        if not raw:
            return None
        total = int(raw.get("batches_total", 0))
        results: list[BatchResult | None] = []
        for index in range(total):
            value = raw.get(f"batch:{index}")
            results.append(BatchResult.from_json(json.loads(value)) if value else None)
        done = [r for r in results if r is not None]
        data: dict[str, Any] = {
            "job_id": job_id,
            "kind": raw.get("kind", "auto_select"),
            "status": raw.get("status", "queued"),
            "project_id": raw.get("project_id"),
            "query": raw.get("query"),
            "language": raw.get("language") or None,
            "provider": raw.get("provider") or None,
            "model": raw.get("model") or None,
            "batches_total": total,
            "batches_done": int(raw.get("batches_done", 0)),
            "selected_conversation_ids": merge_selected(results),
            "errors": [{"batch": r.index, "error": r.error} for r in done if r.error],
            "dropped_ids": sorted({i for r in done for i in r.dropped_ids}),
            "created_at": _float_or_none(raw.get("created_at")),
            "started_at": _float_or_none(raw.get("started_at")),
            "finished_at": _float_or_none(raw.get("finished_at")),
        }
        if data["provider"] == "offline":
            data["note"] = "selected by the offline provider (keyword overlap), not by a model"
        return JobView(job_id, data)


def _float_or_none(value: str | bytes | None) -> float | None:
    return float(value) if value else None


async def run_batches(
    llm: BoundedLlm,
    store: JobStore,
    job_id: str,
    query: str,
    batches: Sequence[Sequence[Item]],
    *,
    language: str | None = None,
    parallel: int = 4,
    skip: frozenset[int] = frozenset(),
) -> None:
    """Run every batch of a started job, ``parallel`` at a time in this process.

    The cluster-wide bound is the limiter's; ``parallel`` only caps how many
    of this job's batches wait for it at once. A failed batch is recorded with
    its error, so the job still completes.
    """
    indexes = asyncio.Queue[int]()
    for index in range(len(batches)):
        if index not in skip:
            indexes.put_nowait(index)

    async def worker() -> None:
        while True:
            try:
                index = indexes.get_nowait()
            except asyncio.QueueEmpty:
                return
            result = await select_batch(llm, query, batches[index], index=index, language=language)
            await store.record_batch(job_id, result)

    async with asyncio.TaskGroup() as group:
        for _ in range(max(1, min(parallel, len(batches)))):
            group.create_task(worker())
