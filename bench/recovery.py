"""Cost of one stuck-work sweep: conversations examined per second, by kind of conversation.

    .venv/bin/python bench/recovery.py [--conversations 2000] [--chunks 5]

Starts a private redis-server, fills it with ``--conversations`` conversations over 20
projects, and times a dry run (the walk and every read of a real run, no writes) for:
finalized conversations (one field read each), open conversations with ``--chunks`` chunks
on their way (their chunks read too), and a run with the lease (cursor writes per page).
No S3: nothing is stuck, so no object is looked at.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, cast

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from config import Settings
from devstack.servers import RedisServer
from gateway.wiring import publisher_for
from recovery.sweeper import StuckSweeper
from storage.conversations import ConversationStore
from storage.redis_client import RedisClient, open_redis
from storage.sweep_lease import SweepLease

PROJECTS = 20


async def fill(store: ConversationStore, conversations: int, chunks: int, *, finalized: bool) -> None:
    projects = [(await store.create_project({"name": f"p{i}"}))["id"] for i in range(PROJECTS)]
    for n in range(conversations):
        cid = (await store.create_conversation(projects[n % PROJECTS], {"title": "t"}))["id"]
        for c in range(chunks):
            chunk_id = f"{n}-{c}"
            key = f"conversation/{cid}/chunks/{chunk_id}-c.webm"
            await store.issue_chunk(cid, chunk_id, path=key, filename="c.webm",
                                    content_type="audio/webm", ttl_s=600)
            await store.confirm_chunk(cid, chunk_id, path=key, source="PORTAL_AUDIO",
                                      timestamp="2026-01-01T10:00:00Z", verified=True)
            if finalized:
                await store.mark_transcribed(cid, chunk_id, transcript="x")
        if finalized:
            await store.redis.hset(store.conversation_key(cid), mapping={"finalized_ms": 1})


async def timed_sweeps(redis: RedisClient, settings: Settings, label: str, count: int) -> None:
    sweeper = StuckSweeper(
        store=ConversationStore(redis), s3=cast(Any, None), publisher=publisher_for(redis, settings),
        lease=SweepLease(redis), settings=settings,
    )
    started = time.perf_counter()
    report = await sweeper.dry_run()
    dry_s = time.perf_counter() - started
    started = time.perf_counter()
    run = await sweeper.run_now()
    run_s = time.perf_counter() - started
    assert run is not None and run.examined == report.examined == count and not report.items
    print(f"{label:<32} {count:>6} conversations  dry run {dry_s:6.3f} s "
          f"({count / dry_s:>8,.0f}/s)  run {run_s:6.3f} s ({count / run_s:>8,.0f}/s)")


async def main(conversations: int, chunks: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(Path(tmp))
        await server.start()
        try:
            settings = Settings.from_env({"REDIS_URL": server.url,
                                          "STUCK_SWEEP_MAX_ITEMS": str(conversations)})
            async with open_redis(settings) as redis:
                for label, finalized in (("finalized", True), (f"open, {chunks} chunks uploaded", False)):
                    await redis.flushdb()
                    await fill(ConversationStore(redis), conversations, chunks, finalized=finalized)
                    await timed_sweeps(redis, settings, label, conversations)
        finally:
            server.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conversations", type=int, default=2000)
    parser.add_argument("--chunks", type=int, default=5)
    args = parser.parse_args()
    asyncio.run(main(args.conversations, args.chunks))
