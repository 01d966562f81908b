"""Benchmark: auto-select over 200 conversations, 300 ms per model call, bound 3.

Runs a private redis-server and the Messages API emulator, then one job
(10 batches of 20) through the bounded client, several times. The ideal wall
time is ``ceil(10 / 3) x 0.3 s = 1.2 s``; the printed ratio is measured / ideal
(target: at most 1.15).

    .venv/bin/python bench/llm.py [--runs 5] [--latency-ms 300] [--bound 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# This file is named like the package it measures: keep bench/ off the path so
# ``import llm`` finds the package, and put the tests (the emulator) on it.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]
sys.path.insert(0, str(ROOT / "tests"))

from emulators.anthropic import AnthropicEmulator, keyword_responder
from prometheus_client import CollectorRegistry

from config import Settings
from devstack.servers import RedisServer
from llm.jobs import run_batches
from llm.lifecycle import open_llm
from llm.selection import pack_batches, prompt_budget_tokens
from storage.redis_client import open_redis


async def one_run(settings: Settings, conversations: list[tuple[str, str]]) -> tuple[float, int]:
    async with open_redis(settings) as redis, open_llm(settings, redis, CollectorRegistry()) as svc:
        await redis.flushdb()
        started = time.perf_counter()
        batches = pack_batches(
            conversations, settings.llm_batch_size, prompt_budget_tokens(settings.llm_context_tokens)
        )
        job_id = await svc.jobs.create(project_id="bench", query="bikes", language=None)
        await svc.jobs.start(
            job_id, plan=[[c for c, _ in b] for b in batches], provider="anthropic", model="m"
        )
        await run_batches(
            svc.llm, svc.jobs, job_id, "bikes", batches,
            parallel=settings.llm_job_parallel_batches,
        )
        elapsed = time.perf_counter() - started
        view = await svc.jobs.get(job_id)
        assert view is not None and view.data["status"] == "completed", view
        assert not view.data["errors"], view.data["errors"]
        return elapsed, len(batches)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--latency-ms", type=int, default=300)
    parser.add_argument("--bound", type=int, default=3)
    parser.add_argument("--conversations", type=int, default=200)
    parser.add_argument("--json", action="store_true", help="print ROW lines for bench/run")
    args = parser.parse_args()
    say = (lambda *a, **k: None) if args.json else print
    latency_s = args.latency_ms / 1000
    conversations = [
        (f"conv-{i:03d}", "we talked about bikes" if i % 4 == 0 else "we talked about trains")
        for i in range(args.conversations)
    ]
    with tempfile.TemporaryDirectory() as data_dir:
        async with RedisServer(Path(data_dir)) as server, AnthropicEmulator(
            latency_s=latency_s, responder=keyword_responder
        ) as emulator:
            settings = Settings.from_env({
                "REDIS_URL": server.url,
                "ANTHROPIC_API_KEY": emulator.api_key,
                "ANTHROPIC_BASE_URL": emulator.base_url,
                "LLM_MAX_CONCURRENT_CALLS": str(args.bound),
            })
            await one_run(settings, conversations)  # warm-up (connections, imports)
            times = []
            batches = 0
            for _ in range(args.runs):
                elapsed, batches = await one_run(settings, conversations)
                times.append(elapsed)
            ideal = math.ceil(batches / args.bound) * latency_s
            median = statistics.median(times)
            say(f"batches={batches} bound={args.bound} latency={latency_s:.3f}s runs={args.runs}")
            say(f"wall times: {', '.join(f'{t:.3f}' for t in times)} s")
            say(f"max in flight seen by the emulator: {emulator.max_in_flight}")
            say(f"ideal {ideal:.3f}s  median {median:.3f}s  ratio {median / ideal:.3f} "
                f"(target <= 1.15)")
            if args.json:
                print("ROW " + json.dumps({
                    "figure": "llm: auto-select wall time", "value": median, "unit": "s",
                    "baseline_name": "ideal (batches / bound x latency)", "baseline": ideal,
                    "ratio": median / ideal, "target": "<= 1.15", "passed": median / ideal <= 1.15,
                    "spread": f"{min(times):.3f}-{max(times):.3f}",
                    "note": f"max in flight {emulator.max_in_flight} (bound {args.bound})",
                }))


if __name__ == "__main__":
    asyncio.run(main())
