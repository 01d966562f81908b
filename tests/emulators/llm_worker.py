"""A test-only worker process: runs auto-select batches from a Redis list through the limiter.

Usage (with ``tests`` on PYTHONPATH; run as a module so this directory, which holds
an ``anthropic.py``, never shadows the SDK): ``python -m emulators.llm_worker JOB_ID WORK_KEY READY_KEY GO_KEY PARALLEL``;
settings come from the environment (REDIS_URL, ANTHROPIC_*, LLM_*). It reports
ready (INCR READY_KEY), waits for GO_KEY so all workers start together, then
pops ``{"index", "query", "items"}`` batches until the list is empty.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import cast

from prometheus_client import CollectorRegistry
from waiting import wait_until

from config import Settings
from llm.lifecycle import open_llm
from llm.selection import select_batch
from storage.redis_client import open_redis


async def main(job_id: str, work_key: str, ready_key: str, go_key: str, parallel: int) -> None:
    settings = Settings.from_env()
    async with open_redis(settings) as redis, open_llm(settings, redis, CollectorRegistry()) as svc:
        await redis.incr(ready_key)
        # Polled often: the workers must start together.
        await wait_until(lambda: redis.exists(go_key), timeout_s=120, interval_s=0.01,
                         message="the go signal never came")

        async def run() -> None:
            while True:
                # LPOP without a count: one decoded string, or None once the list is empty.
                raw = cast("str | None", await redis.lpop(work_key))
                if raw is None:
                    return
                work = json.loads(raw)
                items = [tuple(item) for item in work["items"]]
                result = await select_batch(svc.llm, work["query"], items, index=work["index"])
                await svc.jobs.record_batch(job_id, result)

        await asyncio.gather(*(run() for _ in range(parallel)))


if __name__ == "__main__":
    job, work, ready, go, parallel = sys.argv[1:6]
    asyncio.run(main(job, work, ready, go, int(parallel)))
