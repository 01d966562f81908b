"""Redis memory per conversation and per stream entry, measured with the real store and publisher.

    .venv/bin/python bench/redis_sizing.py [--conversations 200] [--chunks 60]
        [--transcript-chars 450] [--events 20000]

Starts a private redis-server (devstack.servers) and measures ``used_memory`` (INFO
memory) deltas, divided by the count, for:

* a conversation through its life, by the store's own scripts: created, ``--chunks``
  chunks issued, confirmed and transcribed (``--transcript-chars`` each: about 30 s
  of speech), then finished, finalized (merged transcript in the hash) and summarized;
* ``chunk.uploaded`` events in a stream (``events.publish``), the same entries pending
  in a consumer group (read, not acked), and dead letters (``streams/lua/deadletter.lua``);

plus MEMORY USAGE (SAMPLES 0) of one conversation's keys. Figures go in
docs/operations.md ("Sizing"). The defaults: a 30-minute recording in 30 s chunks.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import events.catalogue as events
from config import Settings
from devstack.servers import RedisServer
from gateway.wiring import publisher_for
from storage.conversations import ConversationStore, SummaryDraft
from storage.redis_client import RedisClient, open_redis
from streams.names import StreamNames
from streams.scripts import Scripts

PAGE = 50


async def used_memory(r: RedisClient) -> int:
    """What the data takes: ``used_memory`` without client buffers and the script cache
    (which the measuring itself moves)."""
    info = await r.info("memory")
    return int(info["used_memory"]) - int(info["mem_clients_normal"]) - int(
        info.get("used_memory_scripts", 0))


async def one_conversation(
    store: ConversationStore, project_id: str, chunks: int, text: str, *, finalize: bool
) -> str:
    conversation = await store.create_conversation(project_id, {
        "participant_name": "Alice", "source": "PORTAL_AUDIO", "title": "Town hall",
    })
    cid = str(conversation["id"])
    for n in range(chunks):
        chunk_id = str(uuid.uuid4())
        path = f"conversation/{cid}/chunks/{chunk_id}-chunk-{n}.webm"
        await store.issue_chunk(cid, chunk_id, path=path, filename=f"chunk-{n}.webm",
                                content_type="audio/webm;codecs=opus", ttl_s=3600)
        stamp = f"2026-01-01T10:{n // 2 % 60:02d}:{n % 2 * 30:02d}.000Z"
        await store.confirm_chunk(cid, chunk_id, path=path, timestamp=stamp,
                                  source="PORTAL_AUDIO", verified=True, extra={"size": 480_000})
        await store.mark_transcribing(cid, chunk_id)
        await store.mark_transcribed(cid, chunk_id, transcript=text)
    if finalize:
        await store.finish(cid)
        claim = await store.begin_finalization(cid, "bench-token", 60)
        assert claim.outcome == "claimed", claim
        merged = "\n".join([text] * chunks)
        assert await store.commit_finalization(
            cid, "bench-token", claim.generation, merged_transcript=merged,
            transcript_json_key=f"conversation/{cid}/transcript.json",
            transcript_text_key=f"conversation/{cid}/transcript.txt", failed_chunks=0,
        ) == "ok"
        await store.record_summary_requested(cid, claim.generation)
        summary = "A summary of the conversation. " * 40  # about 1,200 characters
        draft = SummaryDraft(claim.generation, summary, "anthropic", "claude", time.time())
        await store.keep_summary_draft(cid, draft)
        assert await store.store_summary(
            cid, claim.generation, text=summary, provider="anthropic", model="claude",
            s3_key=f"conversation/{cid}/summary.json",
        ) == "ok"
    return cid


async def per_conversation(
    r: RedisClient, store: ConversationStore, args: argparse.Namespace, *, finalize: bool
) -> tuple[float, str]:
    project = await store.create_project({"name": "Sizing", "language": "en"})
    text = ("word " * (args.transcript_chars // 5 + 1))[: args.transcript_chars]
    # One first, not counted: it loads the scripts and warms the allocator.
    await one_conversation(store, project["id"], args.chunks, text, finalize=finalize)
    before = await used_memory(r)
    last = ""
    for _ in range(args.conversations):
        last = await one_conversation(store, project["id"], args.chunks, text, finalize=finalize)
    return (await used_memory(r) - before) / args.conversations, last


async def key_sizes(r: RedisClient, store: ConversationStore, cid: str) -> dict[str, int]:
    chunk_ids = await r.zrange(store.chunks_key(cid), 0, 0)
    keys = {
        "conversation hash": store.conversation_key(cid),
        "chunks zset": store.chunks_key(cid),
        "one chunk hash": store.chunk_key(cid, str(chunk_ids[0])),
    }
    return {label: int(await r.memory_usage(key, samples=0) or 0) for label, key in keys.items()}


async def per_stream_entry(r: RedisClient, settings: Settings, n: int) -> dict[str, float]:
    names = StreamNames(settings.redis_key_prefix)
    keys = names.keys(events.TRANSCRIPTION)
    publisher = publisher_for(r, settings)
    await r.xgroup_create(keys.stream, "sizing", id="0", mkstream=True)
    figures: dict[str, float] = {}
    before = await used_memory(r)
    for start in range(0, n, PAGE):
        await asyncio.gather(*(events.publish(
            publisher, events.CHUNK_UPLOADED, events.ChunkUpload(
                conversation_id=str(uuid.uuid4()), chunk_id=(chunk := str(uuid.uuid4())),
                key=f"conversation/x/chunks/{chunk}-chunk.webm",
                content_type="audio/webm;codecs=opus",
            ), request_id=uuid.uuid4().hex,
        ) for _ in range(min(PAGE, n - start))))
    after_publish = await used_memory(r)
    figures["stream entry"] = (after_publish - before) / n
    taken: list[str] = []
    while len(taken) < n:
        reply: Any = await r.xreadgroup("sizing", "c1", {keys.stream: ">"}, count=PAGE)
        taken += [str(entry_id) for _, entries in reply for entry_id, _ in entries]
    after_read = await used_memory(r)
    figures["pending entry (PEL)"] = (after_read - after_publish) / n
    scripts = Scripts.load(r)
    for entry_id in taken:
        await scripts.deadletter(
            keys=[keys.stream, keys.dead, keys.errors, keys.attempts],
            args=["sizing", entry_id, "", "handler failed 5 times: RuntimeError: provider down",
                  settings.stream_max_len, names.error_field("sizing", entry_id), 5,
                  "RuntimeError: provider down", ""],
        )
    # The dead-letter move acks (the PEL entry goes) and adds the letter.
    figures["dead letter"] = (await used_memory(r) - after_read) / n + figures["pending entry (PEL)"]
    return figures


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(Path(tmp))
        await server.start()
        try:
            settings = Settings.from_env({"REDIS_URL": server.url})
            async with open_redis(settings) as r:
                version = (await r.info("server"))["redis_version"]
                store = ConversationStore(r, key_prefix=settings.redis_key_prefix)
                open_b, _ = await per_conversation(r, store, args, finalize=False)
                await r.flushdb()
                final_b, cid = await per_conversation(r, store, args, finalize=True)
                sizes = await key_sizes(r, store, cid)
                await r.flushdb()
                entries = await per_stream_entry(r, settings, args.events)
        finally:
            server.stop()
    print(f"redis-server {version}; {args.conversations} conversations x {args.chunks} chunks "
          f"x {args.transcript_chars} transcript chars; {args.events} events")
    print(f"  per conversation, transcribed, before finalization  {open_b / 1024:8.1f} KiB")
    print(f"  per conversation, finalized and summarized           {final_b / 1024:8.1f} KiB")
    print(f"  per chunk (finalized conversation / chunks)          {final_b / args.chunks:8.0f} B")
    for label, size in sizes.items():
        print(f"  MEMORY USAGE {label:<40} {size:8d} B")
    for label, per_entry in entries.items():
        print(f"  per {label:<48} {per_entry:8.0f} B")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--conversations", type=int, default=200)
    parser.add_argument("--chunks", type=int, default=60)
    parser.add_argument("--transcript-chars", type=int, default=450)
    parser.add_argument("--events", type=int, default=20_000)
    asyncio.run(main(parser.parse_args()))
