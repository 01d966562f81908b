"""Soak benchmark: memory that stays flat under long load, and what a conversation costs Redis.

On a private Redis and SeaweedFS (``devstack``), with real processes:

1. **Redis memory per conversation.** An ``echo-gateway serve`` and an ``echo-gateway
   worker`` (every group; speech by an OpenAI-compatible emulator, summaries by the offline
   provider). ``used_memory`` before and after initiating ``--idle`` conversations that do
   nothing more (per *idle* conversation), then before and after ``--finalized``
   conversations that each go the portal's way (``--chunks`` presigned uploads to S3,
   confirm, finish) until finalized with a summary (per *finalized* conversation, the
   events left in the streams included; the streams' share is printed beside it).
2. **Gateway RSS.** A fresh ``echo-gateway serve`` under ``wrk`` (many connections) with a
   portal-like mix over thousands of conversations: get-upload-url, conversation and chunk
   reads, the project, pings, confirm of an unknown chunk (404), a host read. RSS after
   10,000 requests is the baseline; RSS after 100,000 must be within 20 % of it.
3. **Worker RSS.** A fresh ``echo-gateway worker --group upload-confirmation``; the bench
   seeds chunks pending verification (their objects are in S3) and publishes their
   ``upload.verify`` events; the worker HEADs each object, marks the chunk uploaded and
   publishes ``chunk.uploaded``. RSS after 5,000 events is the baseline; after 50,000
   within 20 %.

The stack and the helpers that drive it are in ``bench/soak_stack.py``. Prints a
table; :func:`soak_rows` returns its rows ``(name, figure, baseline, ratio,
target)`` for ``bench/run``. Exit status 1 when a target is missed.

    .venv/bin/python bench/soak.py [--requests 100000] [--events 50000] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any, NamedTuple

import aiohttp
from prometheus_client.parser import text_string_to_metric_families
from soak_stack import ADMIN_TOKEN, BUCKET, Stack, bounded, call, rss_mib, until

from events import catalogue as events
from events.catalogue import ChunkUpload
from gateway.wiring import publisher_for
from storage.conversations import ConversationStore
from storage.redis_client import RedisClient, open_redis
from storage.s3_client import open_s3

HOST = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
P = "/api/participant"
RSS_TARGET = 1.20
WEBM = bytes.fromhex("1a45dfa39f4286810142f7810142f2810442f381084282847765626d") + bytes(64)

#: wrk: one thread, requests cycling through a portal-like mix; the thread stops itself
#: after %(limit)d responses (so a phase is a number of requests, not a duration).
WRK_SCRIPT = """
local ids = {}
for line in io.lines("%(ids)s") do ids[#ids + 1] = line end
local project = "%(project)s"
local n, answered, limit = 0, 0, %(limit)d
local statuses = {}
request = function()
  n = n + 1
  local cid = ids[(n %% #ids) + 1]
  local kind = n %% 10
  if kind <= 2 then
    return wrk.format("POST", "%(p)s/conversations/" .. cid .. "/get-upload-url",
      {["Content-Type"] = "application/json"},
      '{"filename": "chunk-1.webm", "content_type": "audio/webm;codecs=opus"}')
  elseif kind <= 4 then
    return wrk.format("GET", "%(p)s/projects/" .. project .. "/conversations/" .. cid)
  elseif kind == 5 then
    return wrk.format("GET", "%(p)s/projects/" .. project .. "/conversations/" .. cid .. "/chunks")
  elseif kind == 6 then
    return wrk.format("GET", "%(p)s/projects/" .. project)
  elseif kind == 7 then
    return wrk.format("POST", "%(p)s/conversations/" .. cid .. "/ping",
      {["Content-Type"] = "application/json"}, '{"state": "recording", "audio_level": 0.4}')
  elseif kind == 8 then
    return wrk.format("POST", "%(p)s/conversations/" .. cid .. "/confirm-upload",
      {["Content-Type"] = "application/json"},
      '{"chunk_id": "00000000-0000-4000-8000-' .. string.format("%%012d", n) ..
      '", "file_url": "conversation/' .. cid .. '/chunks/x.webm", "timestamp": "2026-01-01T10:00:00Z"}')
  else
    return wrk.format("GET", "/api/host/projects/" .. project, {["Authorization"] = "Bearer %(token)s"})
  end
end
response = function(status, headers, body)
  answered = answered + 1
  statuses[status] = (statuses[status] or 0) + 1
  if answered >= limit then wrk.thread:stop() end
end
"""


class Row(NamedTuple):
    """One line of the table (and of ``bench/run``'s)."""

    name: str
    figure: float
    baseline: float | None
    ratio: float | None
    target: str


async def _used_memory(redis: RedisClient) -> int:
    return int((await redis.info("memory"))["used_memory"])


async def _streams_memory(redis: RedisClient) -> int:
    total = 0
    async for key in redis.scan_iter(match="echo:{*}*", _type="stream"):
        total += int(await redis.memory_usage(key, samples=0) or 0)
    return total


async def _own_keys_bytes(redis: RedisClient, cids: list[str]) -> float:
    """Mean ``MEMORY USAGE`` of the keys under each conversation's own hash tag."""
    total = 0
    for cid in cids:
        async for key in redis.scan_iter(match=f"echo:{{c:{cid}}}*"):
            total += int(await redis.memory_usage(key, samples=0) or 0)
    return total / max(1, len(cids))


async def _portal_conversation(http: aiohttp.ClientSession, base: str, pid: str,
                               chunks: int) -> str:
    conv = await call(http, "POST", f"{base}{P}/projects/{pid}/conversations/initiate",
                       json={"name": "Soak", "tag_id_list": []})
    cid = str(conv["id"])
    for k in range(chunks):
        grant = await call(http, "POST", f"{base}{P}/conversations/{cid}/get-upload-url",
                            json={"filename": f"c{k}.webm", "content_type": "audio/webm"})
        form = aiohttp.FormData()
        for name, value in grant["fields"].items():
            form.add_field(name, value)
        form.add_field("file", WEBM, filename="c.webm", content_type="audio/webm")
        async with http.post(grant["upload_url"], data=form) as resp:
            if resp.status != 204:
                raise RuntimeError(f"S3 POST: {resp.status}")
        async with http.post(f"{base}{P}/conversations/{cid}/confirm-upload", json={
            "chunk_id": grant["chunk_id"], "file_url": grant["file_url"],
            "timestamp": f"2026-01-01T10:{k // 2:02d}:{30 * (k % 2):02d}Z",
        }) as resp:
            if resp.status not in (200, 202):
                raise RuntimeError(f"confirm: {resp.status}")
    await call(http, "POST", f"{base}{P}/conversations/{cid}/finish")
    return cid


async def redis_memory_rows(stack: Stack, idle: int, finalized: int, chunks: int) -> list[Row]:
    base, gateway = await stack.serve()
    _, worker = await stack.worker()
    async with open_redis(stack.settings) as redis, aiohttp.ClientSession() as http:
        project = await call(http, "POST", f"{base}/api/host/projects", ok=201, headers=HOST,
                              json={"name": "memory", "language": "en"})
        pid = project["id"]
        before = await _used_memory(redis)
        idle_convs = await bounded(idle, lambda _: call(
            http, "POST", f"{base}{P}/projects/{pid}/conversations/initiate",
            json={"name": "Idle", "tag_id_list": []}))
        per_idle = (await _used_memory(redis) - before) / idle
        own_idle = await _own_keys_bytes(redis, [str(c["id"]) for c in idle_convs[:50]])

        before, streams_before = await _used_memory(redis), await _streams_memory(redis)
        cids = await bounded(finalized, lambda _: _portal_conversation(http, base, pid, chunks),
                              limit=8)
        store = ConversationStore(redis)

        async def all_summarized() -> bool:
            convs = [await store.get_conversation(c) for c in cids]
            return all(c and c["finalized_at"] and c["summary"] for c in convs)

        await until(all_summarized, 600, "every conversation finalized and summarized")
        per_final = (await _used_memory(redis) - before) / finalized
        own_final = await _own_keys_bytes(redis, cids[:50])
        streams_share = (await _streams_memory(redis) - streams_before) / finalized
    await stack.stop(worker)
    await stack.stop(gateway)
    return [
        Row("redis bytes / idle conversation", per_idle, None, None,
            f"report (its own keys: {own_idle:,.0f})"),
        Row(f"redis bytes / finalized conv. ({chunks} chunks)", per_final, None, None,
            f"report (its own keys: {own_final:,.0f}; stream entries: {streams_share:,.0f})"),
    ]


async def _requests_answered(http: aiohttp.ClientSession, base: str) -> float:
    """The gateway's own count of answered requests (its /metrics reads left out)."""
    async with http.get(base + "/metrics") as resp:
        text = await resp.text()
    return sum(
        sample.value for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "echo_http_requests_total" and sample.labels.get("route") != "/metrics"
    )


async def _wrk(base: str, script: Path, connections: int, total: float) -> None:
    """Load until the gateway has answered ``total`` requests in all. (wrk runs for its
    duration even after its thread stopped itself: it is interrupted once the count is in.)"""
    # A blocking spawn, but before the phase is measured.
    proc = subprocess.Popen(  # noqa: ASYNC220
        ["wrk", "-t", "1", "-c", str(connections), "-d", "900s", "-s", str(script), base],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        async with aiohttp.ClientSession() as http:
            async def answered() -> bool:
                if proc.poll() is not None:
                    raise RuntimeError(f"wrk exited with {proc.returncode}")
                return await _requests_answered(http, base) >= total

            await until(answered, 900, f"{total:,.0f} requests answered")
    finally:
        proc.send_signal(signal.SIGINT)
        await asyncio.to_thread(proc.wait)


async def gateway_rss_rows(stack: Stack, requests: int, conversations: int,
                           connections: int) -> list[Row]:
    base, gateway = await stack.serve()
    async with aiohttp.ClientSession() as http:
        project = await call(http, "POST", f"{base}/api/host/projects", ok=201, headers=HOST,
                              json={"name": "soak", "language": "en"})
        ids = await bounded(conversations, lambda _: call(
            http, "POST", f"{base}{P}/projects/{project['id']}/conversations/initiate",
            json={"name": "Soak", "tag_id_list": []}))
    ids_file = stack.root / "ids.txt"
    ids_file.write_text("\n".join(str(c["id"]) for c in ids) + "\n")
    baseline_requests = requests // 10
    measured: list[float] = []
    for limit in (baseline_requests, requests - baseline_requests):
        script = stack.root / f"mix-{limit}.lua"
        script.write_text(WRK_SCRIPT % {"ids": ids_file, "project": project["id"], "p": P,
                                        "limit": limit, "token": ADMIN_TOKEN})
        async with aiohttp.ClientSession() as http:
            target = await _requests_answered(http, base) + limit
        await _wrk(base, script, connections, target)
        measured.append(rss_mib(gateway.pid))
    await stack.stop(gateway)
    baseline, after = measured
    return [Row(f"gateway RSS MiB after {requests:,} requests", after, baseline,
                after / baseline, f"<= {RSS_TARGET:.2f} x RSS after {baseline_requests:,}")]


async def _processed(http: aiohttp.ClientSession, metrics_url: str, group: str) -> float:
    async with http.get(metrics_url) as resp:
        text = await resp.text()
    return sum(
        sample.value for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "echo_stream_processed_total" and sample.labels.get("group") == group
    )


async def worker_rss_rows(stack: Stack, events_total: int, conversations: int = 500) -> list[Row]:
    group = "upload-confirmation"
    base, worker = await stack.worker(group)
    settings = stack.settings
    baseline_events = events_total // 10
    measured: list[float] = []
    async with open_redis(settings) as redis, open_s3(settings) as s3, \
            aiohttp.ClientSession() as http:
        store = ConversationStore(redis)
        publisher = publisher_for(redis, settings)
        project = await store.create_project({"name": "worker soak"})
        convs = [(await store.create_conversation(project["id"], {"title": "s"}))["id"]
                 for _ in range(conversations)]
        # One object per conversation, named by every chunk of it: the handler's HEAD, state
        # change and event are the same as with one object each, without 50,000 uploads.
        keys = {cid: f"conversation/{cid}/chunks/shared.webm" for cid in convs}
        await bounded(conversations, lambda i: s3.put_object(
            Bucket=BUCKET, Key=keys[convs[i]], Body=WEBM, ContentType="audio/webm"))

        async def seed(i: int) -> None:
            cid, chunk_id = convs[i % conversations], str(uuid.uuid4())
            await store.issue_chunk(cid, chunk_id, path=keys[cid], filename="c.webm",
                                    content_type="audio/webm", ttl_s=3600)
            await store.confirm_chunk(cid, chunk_id, path=keys[cid], source="SOAK",
                                      timestamp=f"2026-01-01T10:00:{i % 60:02d}Z", verified=False)
            await events.publish(publisher, events.UPLOAD_VERIFY,
                                 ChunkUpload(cid, chunk_id, keys[cid], "audio/webm"))

        done = 0
        for count in (baseline_events, events_total - baseline_events):
            await bounded(count, lambda i, start=done: seed(start + i))
            done += count

            async def handled(target: int = done) -> bool:
                return await _processed(http, base + "/metrics", group) >= target

            await until(handled, 900, f"{done} events handled")
            measured.append(rss_mib(worker.pid))
    await stack.stop(worker)
    baseline, after = measured
    return [Row(f"worker RSS MiB after {events_total:,} events", after, baseline,
                after / baseline, f"<= {RSS_TARGET:.2f} x RSS after {baseline_events:,}")]


async def soak_rows_async(*, requests: int = 100_000, events_total: int = 50_000,
                          idle: int = 1000, finalized: int = 100, chunks: int = 10,
                          conversations: int = 4000, connections: int = 32) -> list[Row]:
    """Run the three parts on a private stack; the table's rows."""
    if not shutil.which("wrk"):
        raise RuntimeError("wrk is needed (apt-get install wrk)")
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        stack = Stack(Path(tmp))
        async with AsyncExitStack() as exits:
            await stack.start(exits)
            started = time.monotonic()
            rows = await redis_memory_rows(stack, idle, finalized, chunks)
            _progress(f"redis memory: {time.monotonic() - started:.0f} s")
            started = time.monotonic()
            rows += await gateway_rss_rows(stack, requests, conversations, connections)
            _progress(f"gateway RSS: {time.monotonic() - started:.0f} s")
            started = time.monotonic()
            rows += await worker_rss_rows(stack, events_total)
            _progress(f"worker RSS: {time.monotonic() - started:.0f} s")
    return rows


def _progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def soak_rows(**kw: Any) -> list[Row]:
    """What ``bench/run`` calls: the rows ``(name, figure, baseline, ratio, target)``."""
    return asyncio.run(soak_rows_async(**kw))


def missed(row: Row) -> bool:
    return row.ratio is not None and row.ratio > RSS_TARGET


def table(rows: list[Row]) -> str:
    lines = [f"{'':46} {'figure':>12} {'baseline':>10} {'ratio':>6}  target"]
    for row in rows:
        baseline = f"{row.baseline:10.1f}" if row.baseline is not None else f"{'':10}"
        ratio = f"{row.ratio:6.3f}" if row.ratio is not None else f"{'':6}"
        verdict = ("  MISS" if missed(row) else "  pass") if row.ratio is not None else ""
        lines.append(f"{row.name:46} {row.figure:12,.1f} {baseline} {ratio}  {row.target}{verdict}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--quick", action="store_true", help="a tenth of everything (a try-out)")
    parser.add_argument("--json", action="store_true", help="print ROW lines for bench/run")
    args = parser.parse_args()
    scale = 10 if args.quick else 1
    rows = soak_rows(requests=args.requests // scale, events_total=args.events // scale,
                     idle=1000 // scale, finalized=100 // scale, connections=args.connections)
    if args.json:
        for row in rows:
            unit = "bytes" if "bytes" in row.name.lower() else "MiB"
            print("ROW " + json.dumps({
                "figure": f"soak: {row.name}", "value": row.figure, "unit": unit,
                "baseline_name": "same process earlier" if row.baseline is not None else "",
                "baseline": row.baseline, "ratio": row.ratio, "target": row.target,
                "passed": None if row.ratio is None else not missed(row), "spread": "-",
            }))
        return 0  # bench/run: a missed target is for reading
    print(table(rows))
    return 1 if any(missed(row) for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())


