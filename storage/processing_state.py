"""How far a conversation's processing has come, read from the store in two round trips
(the API's ``processing`` object is formatted from it by ``transcription.status``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

from storage.chunks import ChunkStore


@dataclass(frozen=True, slots=True)
class ProcessingState:
    #: Listed chunks by state (issued URLs that were never confirmed do not count).
    chunk_counts: dict[str, int]
    finalized_ms: int | None
    finalizations: int
    transcript_json_key: str | None
    transcript_text_key: str | None
    #: The summary of the last finalized generation was requested.
    summary_requested: bool
    summary_ready: bool


class ProcessingView(ChunkStore):
    """The processing view of the store."""

    async def processing_state(self, conversation_id: str) -> ProcessingState:
        """The state of a conversation (empty counts if it has no chunks or does not exist)."""
        counts = await self.chunk_status_counts(conversation_id)
        raw = cast(list[str | None], await self.redis.hmget(self.conversation_key(conversation_id), [
            "finalized_ms", "finalizations", "transcript_json_key", "transcript_text_key",
            "summary_requested_gen", "final_done_gen", "summary",
        ]))
        finalized_ms, finalizations, json_key, text_key, summary_gen, done_gen, summary = raw
        return ProcessingState(
            chunk_counts=counts,
            finalized_ms=int(float(finalized_ms)) if finalized_ms else None,
            finalizations=int(finalizations or 0),
            transcript_json_key=json_key or None,
            transcript_text_key=text_key,
            summary_requested=bool(summary_gen) and summary_gen == done_gen,
            summary_ready=bool(summary),
        )
