"""A test-only transcription worker whose transcriber hangs mid-chunk (to be ``kill -9``-ed).

Run as ``python tests/transcription_worker_proc.py`` with settings in the
environment. It runs the real ``transcription`` group (real fetch from S3,
real store transitions) with a transcriber that records
``<prefix>:{test}:transcribing`` = its pid in Redis and then never returns.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from prometheus_client import CollectorRegistry

from config import Settings
from gateway.consumers import run_consumers
from gateway.wiring import publisher_for
from storage.redis_client import RedisClient, open_redis
from storage.s3_client import open_s3
from transcription.base import TranscriptResult
from transcription.lifecycle import open_transcription, transcription_group_for


class HangingTranscriber:
    name = "hanging"

    def __init__(self, redis: RedisClient, key: str) -> None:
        self._redis = redis
        self._key = key

    async def transcribe(
        self, path: Path, *, language: str | None, content_type: str
    ) -> TranscriptResult:
        await self._redis.set(self._key, str(os.getpid()))
        await asyncio.Event().wait()  # mid-chunk forever
        raise AssertionError("unreachable")


async def main() -> None:
    settings = Settings.from_env()
    async with open_redis(settings) as redis, open_s3(settings) as s3:
        key = f"{settings.redis_key_prefix}:{{test}}:transcribing"
        async with open_transcription(
            settings, redis, CollectorRegistry(), transcriber=HangingTranscriber(redis, key)
        ) as service:
            spec = transcription_group_for(
                service, settings=settings, redis=redis, s3=s3,
                publisher=publisher_for(redis, settings),
            )
            await run_consumers(settings, [spec], consumer_name=f"doomed-{os.getpid()}")


if __name__ == "__main__":
    asyncio.run(main())
