"""A conversation's summary: one per finalized generation, stored only while that generation is
current (a chunk that re-opened the conversation makes an older summary stale).

Two steps, each one script on the conversation hash, so a model call is paid for once:

1. :meth:`SummaryStore.keep_summary_draft` keeps the model's result as the generation's
   *draft* (``summary_draft*`` fields) as soon as it is produced;
2. once the S3 copy is written, :meth:`SummaryStore.store_summary` makes it the
   conversation's summary (``summary*`` fields) and drops the draft.

A redelivery after a failed S3 write finds the draft (:attr:`SummaryInputs.draft`) and only
writes S3 and the final record again. Both steps check the generation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

from storage.store_core import StoreCore

_INPUT_FIELDS = (
    "merged_transcript", "final_gen", "summary_gen", "summary_draft_gen", "summary_draft",
    "summary_draft_provider", "summary_draft_model", "summary_draft_created_at",
)


@dataclass(frozen=True, slots=True)
class SummaryDraft:
    """A generation's summary as the model produced it, kept until it is stored for good."""

    generation: int
    text: str
    provider: str
    model: str
    #: Epoch seconds of the model's answer (written to S3 as is, so every retry writes the same).
    created_at: float


@dataclass(frozen=True, slots=True)
class SummaryInputs:
    """What summarizing a generation needs, read before the (slow) model call."""

    #: False when the hash has neither a generation nor a merged transcript.
    exists: bool
    merged_transcript: str
    final_gen: int
    #: The generation whose summary is stored, if any.
    summary_gen: int | None
    #: The summary kept for a generation whose S3 copy or final record is not written yet.
    draft: SummaryDraft | None = None

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

    def draft_for(self, generation: int) -> SummaryDraft | None:
        """The kept draft of ``generation``: no model call is needed for it."""
        return self.draft if self.draft and self.draft.generation == generation else None


class SummaryStore(StoreCore):
    """The summary part of the store."""

    async def summary_inputs(self, conversation_id: str) -> SummaryInputs:
        (transcript, final_gen, summary_gen, draft_gen, draft, draft_provider, draft_model,
         draft_created_at) = cast(list[str | None], await self.redis.hmget(
            self.conversation_key(conversation_id), list(_INPUT_FIELDS)
        ))
        kept = None
        if draft_gen and draft is not None:
            kept = SummaryDraft(
                generation=int(draft_gen), text=draft, provider=draft_provider or "",
                model=draft_model or "", created_at=float(draft_created_at or 0),
            )
        return SummaryInputs(
            exists=not (final_gen is None and transcript is None),
            merged_transcript=transcript or "",
            final_gen=int(final_gen or 0),
            summary_gen=int(summary_gen) if summary_gen else None,
            draft=kept,
        )

    async def keep_summary_draft(
        self, conversation_id: str, draft: SummaryDraft
    ) -> tuple[str, SummaryDraft | None]:
        """Keep ``draft`` for its generation if it is still current and has no summary yet.

        Returns ``("ok", kept)`` where ``kept`` is the draft now kept (an earlier draft of the
        same generation wins, so concurrent writers write the same summary), else
        ``("already" | "stale" | "no_conversation", None)``.
        """
        reply = await self._run(
            "summary_draft", [self.conversation_key(conversation_id)],
            [draft.generation, draft.text, draft.provider, draft.model, repr(draft.created_at)],
        )
        outcome = str(reply[0])
        if outcome != "ok":
            return outcome, None
        text, provider, model, created_at = (str(part) for part in reply[1:5])
        return outcome, SummaryDraft(
            generation=draft.generation, text=text, provider=provider, model=model,
            created_at=float(created_at),
        )

    async def store_summary(
        self, conversation_id: str, generation: int, *, text: str, provider: str, model: str,
        s3_key: str,
    ) -> str:
        """Store the summary of ``generation`` if it is still current (and drop its draft):
        ``ok``, ``already`` (this generation has one), ``stale`` or ``no_conversation``."""
        reply = await self._run(
            "store_summary", [self.conversation_key(conversation_id)],
            [generation, text, provider, model, s3_key],
        )
        return str(reply)
