"""A conversation's processing status for the participant and host API.

``processing``: chunk counts by state (listed chunks only: issued URLs that were
never confirmed do not count), the finalization time and count, where the
transcript files are, and whether the summary was requested or is there.
"""

from __future__ import annotations

from typing import Any

from storage.conversations import CHUNK_STATES, ConversationStore, ms_to_iso


async def processing_status(store: ConversationStore, conversation_id: str) -> dict[str, Any]:
    """The ``processing`` object of a conversation (empty counts if it has no chunks)."""
    redis = store.redis
    ids = await redis.zrange(store.chunks_key(conversation_id), 0, -1)
    counts = {state: 0 for state in CHUNK_STATES if state != "issued"}
    if ids:
        async with redis.pipeline(transaction=False) as pipe:
            for chunk_id in ids:
                pipe.hget(store.chunk_key(conversation_id, chunk_id), "status")
            statuses = await pipe.execute()
        for status in statuses:
            if status in counts:
                counts[status] += 1
    raw = await redis.hmget(store.conversation_key(conversation_id), [
        "finalized_ms", "finalizations", "transcript_json_key", "transcript_text_key",
        "summary_requested_gen", "final_done_gen", "summary",
    ])
    finalized_ms, finalizations, json_key, text_key, summary_gen, done_gen, summary = raw
    return {
        "chunks": {**counts, "total": sum(counts.values())},
        "finalized_at": ms_to_iso(finalized_ms),
        "finalizations": int(finalizations or 0),
        "transcript": {"json_key": json_key, "text_key": text_key} if json_key else None,
        "summary": {
            "requested": bool(summary_gen) and summary_gen == done_gen,
            "ready": bool(summary),
            "location": "conversation.summary" if summary else None,
        },
    }
