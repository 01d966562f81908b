"""A conversation's summary: one per finalized generation, stored only while that generation is
current (a chunk that re-opened the conversation makes an older summary stale)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

from storage.store_core import StoreCore


@dataclass(frozen=True, slots=True)
class SummaryInputs:
    """What summarizing a generation needs, read before the (slow) model call."""

    #: False when the hash has neither a generation nor a merged transcript.
    exists: bool
    merged_transcript: str
    final_gen: int
    #: The generation whose summary is stored, if any.
    summary_gen: int | None

    def skip_reason(self, generation: int) -> str | None:
        """Why ``generation`` needs no summary (``no_conversation``, ``stale``, ``already``,
        ``empty``), or None: summarize it."""
        if not self.exists:
            return "no_conversation"
        if self.final_gen != generation:
            return "stale"  # a newer generation asks for its own summary
        if self.summary_gen == generation:
            return "already"
        if not self.merged_transcript.strip():
            return "empty"
        return None


class SummaryStore(StoreCore):
    """The summary part of the store."""

    async def summary_inputs(self, conversation_id: str) -> SummaryInputs:
        transcript, final_gen, summary_gen = cast(list[str | None], await self.redis.hmget(
            self.conversation_key(conversation_id), ["merged_transcript", "final_gen", "summary_gen"]
        ))
        return SummaryInputs(
            exists=not (final_gen is None and transcript is None),
            merged_transcript=transcript or "",
            final_gen=int(final_gen or 0),
            summary_gen=int(summary_gen) if summary_gen else None,
        )

    async def store_summary(
        self, conversation_id: str, generation: int, *, text: str, provider: str, model: str,
        s3_key: str,
    ) -> str:
        """Store the summary of ``generation`` if it is still current: ``ok``, ``already`` (this
        generation has one), ``stale`` or ``no_conversation``."""
        reply = await self._run(
            "store_summary", [self.conversation_key(conversation_id)],
            [generation, text, provider, model, s3_key],
        )
        return str(reply)
