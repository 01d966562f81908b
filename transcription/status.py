"""A conversation's processing status for the participant and host API.

``processing``: chunk counts by state (listed chunks only: issued URLs that were
never confirmed do not count), the finalization time and count, where the
transcript files are, and whether the summary was requested or is there.

The store reads its own keys (:meth:`~storage.conversations.ConversationStore.processing_state`);
this module only shapes the answer, so the API's JSON stays out of ``storage``.
"""

from __future__ import annotations

from typing import Any

from storage.conversations import ConversationStore, ms_to_iso


async def processing_status(store: ConversationStore, conversation_id: str) -> dict[str, Any]:
    """The ``processing`` object of a conversation (empty counts if it has no chunks)."""
    state = await store.processing_state(conversation_id)
    counts = state.chunk_counts
    json_key = state.transcript_json_key
    return {
        "chunks": {**counts, "total": sum(counts.values())},
        "finalized_at": ms_to_iso(state.finalized_ms),
        "finalizations": state.finalizations,
        "transcript": {"json_key": json_key, "text_key": state.transcript_text_key} if json_key else None,
        "summary": {
            "requested": state.summary_requested,
            "ready": state.summary_ready,
            "location": "conversation.summary" if state.summary_ready else None,
        },
    }
