"""Benchmark: the transcription pipeline, confirm -> transcription -> finalization.

Starts a private Redis and SeaweedFS, runs the ``transcription`` consumer group
in this process and measures:

1. **throughput** with a no-op transcriber (the pipeline's own cost: S3 fetch
   to a temporary file, store transitions, finalization with its S3 writes and
   the summary request): ``--conversations`` x ``--chunks`` chunks are
   confirmed (store transition + ``chunk.uploaded`` event, as confirm-upload
   does) and each conversation finished; chunks per second until every
   conversation is finalized;
2. **latency** with the ``local`` transcriber (faster-whisper, Whisper base,
   int8 on CPU) on a 30 s chunk made of the committed espeak-ng fixtures:
   the median time from confirm to transcript stored, over ``--runs`` runs,
   and its ratio to the audio length (real-time factor).

During (1) the CPU seconds of this process (the consumer and the driver), of
redis-server and of the S3 server are printed: the largest names the
bottleneck. ``--json`` prints the rows for ``bench/run``.

    .venv/bin/python bench/pipeline.py [--conversations 20] [--chunks 25] [--runs 5] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from prometheus_client import CollectorRegistry

from config import Settings
from devstack.servers import RedisServer, SeaweedServer
from events import catalogue as events
from events.catalogue import ChunkUpload, FinalizeRequest
from gateway.wiring import publisher_for, streams_config
from storage.conversations import ConversationStore
from storage.redis_client import open_redis
from storage.s3_client import ensure_bucket, open_s3
from streams.runtime import ConsumerRuntime
from transcription.base import NoopTranscriber
from transcription.lifecycle import (
    TranscriptionService,
    make_bound,
    open_transcription,
    transcription_group_for,
)
from transcription.metrics import TranscriptionMetrics

SPEECH = ROOT / "tests" / "fixtures" / "speech"


def thirty_second_chunk(seconds: float = 30.0) -> bytes:
    """A standalone webm/opus file: the fixture sentences, with pauses, repeated to ``seconds``."""
    import av
    import numpy as np

    rate = 48000
    pieces = []
    for name in ("01-garden.webm", "02-bicycle.wav", "03-mountain.webm"):
        with av.open(str(SPEECH / name)) as inp:
            resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
            frames = [f for frame in inp.decode(audio=0) for f in resampler.resample(frame)]
            pieces.append(np.concatenate([f.to_ndarray().reshape(-1) for f in frames]))
            pieces.append(np.zeros(rate // 2, dtype=np.float32))
    one_round = np.concatenate(pieces)
    total = int(seconds * rate)
    audio = np.tile(one_round, total // len(one_round) + 1)[:total].astype(np.float32)
    out_buf = io.BytesIO()
    with av.open(out_buf, "w", format="webm") as out:
        stream = out.add_stream("libopus", rate=rate, layout="mono")
        stream.bit_rate = 24_000
        for start in range(0, len(audio), 960):
            frame = av.AudioFrame.from_ndarray(audio[None, start:start + 960], format="flt",
                                               layout="mono")
            frame.sample_rate = rate
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return out_buf.getvalue()


async def add_chunk(store, s3, publisher, settings, cid: str, body: bytes, n: int) -> ChunkUpload:
    chunk_id = str(uuid.uuid4())
    key = f"conversation/{cid}/chunks/{chunk_id}-c.webm"
    await store.issue_chunk(cid, chunk_id, path=key, filename="c.webm",
                            content_type="audio/webm", ttl_s=600)
    await s3.put_object(Bucket=settings.s3_bucket, Key=key, Body=body)
    return ChunkUpload(cid, chunk_id, key, "audio/webm")


async def confirm(store, publisher, upload: ChunkUpload, n: int) -> None:
    """What confirm-upload does once the object is seen: the transition, then the event."""
    await store.confirm_chunk(upload.conversation_id, upload.chunk_id, path=upload.key,
                              source="BENCH", timestamp=f"2026-01-01T10:{n // 60 % 60:02d}:{n % 60:02d}Z",
                              verified=True)
    await events.publish(publisher, events.CHUNK_UPLOADED, upload)


def runtime_for(service, settings, redis, s3) -> ConsumerRuntime:
    spec = transcription_group_for(
        service, settings=settings, redis=redis, s3=s3, publisher=publisher_for(redis, settings)
    )
    return ConsumerRuntime(redis, streams_config(settings), CollectorRegistry(), [spec])


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def throughput(settings: Settings, conversations: int, chunks: int,
                     pids: dict[str, int], cpu: dict[str, float]) -> float:
    async with open_redis(settings) as redis, open_s3(settings) as s3:
        store = ConversationStore(redis)
        publisher = publisher_for(redis, settings)
        project = await store.create_project({"name": "bench"})
        plan = []
        for _ in range(conversations):
            cid = (await store.create_conversation(project["id"], {"title": "b"}))["id"]
            plan.append((cid, [await add_chunk(store, s3, publisher, settings, cid, b"x" * 2000, i)
                               for i in range(chunks)]))
        metrics = TranscriptionMetrics(CollectorRegistry())
        service = TranscriptionService(NoopTranscriber("words"),
                                       make_bound(settings, redis, metrics), metrics)
        runtime = runtime_for(service, settings, redis, s3)
        await runtime.start()
        try:
            started = time.perf_counter()
            cpu0 = {name: _cpu_s(pid) for name, pid in pids.items()}
            for cid, uploads in plan:
                await asyncio.gather(*(confirm(store, publisher, u, i)
                                       for i, u in enumerate(uploads)))
                result = await store.finish(cid)
                if result.finalizable:
                    await events.publish(publisher, events.CONVERSATION_FINALIZE, FinalizeRequest(cid))
            pending = {cid for cid, _ in plan}
            while pending:
                for cid in list(pending):
                    if (await store.get_conversation(cid))["finalized_at"]:
                        pending.discard(cid)
                await asyncio.sleep(0.01)
            elapsed = time.perf_counter() - started
            cpu.update({name: _cpu_s(pid) - cpu0[name] for name, pid in pids.items()})
        finally:
            await runtime.stop(1.0)
    return conversations * chunks / elapsed


async def latency(settings: Settings, runs: int,
                  say: Callable[..., None] = print) -> tuple[float, list[float]]:
    body = thirty_second_chunk()
    samples = []
    async with open_redis(settings) as redis, open_s3(settings) as s3:
        store = ConversationStore(redis)
        publisher = publisher_for(redis, settings)
        project = await store.create_project({"name": "bench", "language": "en"})
        async with open_transcription(settings, redis, CollectorRegistry()) as service:
            runtime = runtime_for(service, settings, redis, s3)
            await runtime.start()
            try:
                for run in range(runs + 1):  # the first run warms up
                    cid = (await store.create_conversation(project["id"], {"title": "b"}))["id"]
                    upload = await add_chunk(store, s3, publisher, settings, cid, body, 0)
                    started = time.perf_counter()
                    await confirm(store, publisher, upload, 0)
                    while (await store.get_chunk(cid, upload.chunk_id))["status"] not in (
                        "transcribed", "failed"
                    ):
                        await asyncio.sleep(0.02)
                    if run:
                        samples.append(time.perf_counter() - started)
                chunk = await store.get_chunk(cid, upload.chunk_id)
                say(f"  last transcript ({chunk['status']}): {str(chunk['transcript'])[:100]}...")
            finally:
                await runtime.stop(1.0)
    return statistics.median(samples), samples


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--conversations", type=int, default=20)
    parser.add_argument("--chunks", type=int, default=25)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--json", action="store_true", help="print ROW lines for bench/run")
    args = parser.parse_args()
    say = (lambda *a, **k: None) if args.json else print
    with tempfile.TemporaryDirectory() as tmp:
        redis_server = RedisServer(Path(tmp) / "redis")
        s3_server = SeaweedServer(Path(tmp) / "s3")
        await redis_server.start()
        await s3_server.start()
        try:
            settings = Settings.from_env({
                "REDIS_URL": redis_server.url, "S3_ENDPOINT_URL": s3_server.endpoint_url,
                "S3_BUCKET": "bench", "AWS_ACCESS_KEY_ID": s3_server.access_key,
                "AWS_SECRET_ACCESS_KEY": s3_server.secret_key, "LOG_LEVEL": "warning",
                "TRANSCRIPTION_CONCURRENCY": str(args.concurrency), "TRANSCRIBER": "local",
                "TRANSCRIPTION_MAX_CONCURRENT_PROCESS": str(args.concurrency),
                "TRANSCRIPTION_MAX_CONCURRENT_CALLS": str(args.concurrency),
            })
            async with open_s3(settings) as s3:
                await ensure_bucket(s3, settings.s3_bucket)
            pids = {"this process (consumer + driver)": os.getpid(),
                    "redis-server": redis_server.pid, "S3 server (weed)": s3_server.pid}
            cpu: dict[str, float] = {}
            rate = await throughput(settings, args.conversations, args.chunks, pids, cpu)
            wall_s = args.conversations * args.chunks / rate
            busiest = max(cpu, key=lambda name: cpu[name])
            where = ", ".join(f"{name} {s:.2f} s ({s / wall_s:.0%} of a core)"
                              for name, s in cpu.items())
            say(f"no-op transcriber: {args.conversations * args.chunks} chunks in "
                f"{args.conversations} conversations, {rate:.0f} chunks/s "
                "(confirm -> transcribed -> finalized)")
            say(f"  CPU over {wall_s:.2f} s: {where}; bottleneck: {busiest}")
            local = settings.replace(transcription_concurrency=1)
            median_s, samples = await latency(local, args.runs, say)
            say(f"local transcriber, 30 s chunk: median {median_s:.2f} s from confirm to "
                f"transcript stored (real-time factor {median_s / 30:.3f}); runs: "
                + ", ".join(f"{s:.2f}" for s in samples))
            if args.json:
                for row in (
                    {"figure": "pipeline: chunks/s, no-op transcriber", "value": rate,
                     "unit": "chunks/s", "baseline_name": "-", "baseline": None, "ratio": None,
                     "target": "(for reading)", "passed": None, "spread": "one run",
                     "note": f"bottleneck {busiest} ({cpu[busiest] / wall_s:.0%} of a core)"},
                    {"figure": "pipeline: local transcriber, 30 s chunk", "value": median_s,
                     "unit": "s", "baseline_name": "audio length", "baseline": 30.0,
                     "ratio": median_s / 30, "target": "(for reading)", "passed": None,
                     "spread": f"{min(samples):.2f}-{max(samples):.2f}",
                     "note": "real-time factor"},
                ):
                    print("ROW " + json.dumps(row))
        finally:
            s3_server.stop()
            redis_server.stop()


if __name__ == "__main__":
    asyncio.run(main())
