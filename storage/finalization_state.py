"""The conversation's finalization claim: who may merge and commit which generation.

The protocol (``transcription.finalization`` drives it) lives in the hash's
``final_*`` fields, changed only by ``storage/lua/finalize_{begin,check,commit}.lua``:
a claim is held by one finalize event (its token) until ``final_claim_until_ms``;
``final_gen`` is bumped by every chunk listed or deleted, so a finalizer that
read an older set of chunks cannot commit. ``summary_requested_gen`` records that
the committed generation's summary was asked for.
"""

from __future__ import annotations

from dataclasses import dataclass

from storage.store_core import StoreCore, field_pairs


@dataclass(frozen=True, slots=True)
class FinalizationClaim:
    """What :meth:`FinalizationState.begin_finalization` found."""

    #: ``claimed`` (ours now), ``busy`` (another live claim), ``done`` (finalized),
    #: ``not_ready`` (not finalizable) or ``no_conversation``.
    outcome: str
    #: The generation to finalize; for ``done``, the generation that was committed.
    generation: int = 0
    #: For ``done``: the token of the event that committed it.
    done_token: str = ""
    #: For ``done``: whether the summary request of that generation was recorded.
    summary_recorded: bool = False


def _claim_ms(claim_s: float) -> int:
    return int(claim_s * 1000)


class FinalizationState(StoreCore):
    """The finalization part of the store."""

    async def begin_finalization(
        self, conversation_id: str, token: str, claim_s: float
    ) -> FinalizationClaim:
        """Claim the conversation for the event ``token`` for ``claim_s`` unless it is finalized,
        not finalizable or claimed by another live event."""
        reply = await self._run(
            "finalize_begin", [self.conversation_key(conversation_id)], [token, _claim_ms(claim_s)]
        )
        outcome = str(reply[0])
        if outcome == "no_conversation":
            return FinalizationClaim(outcome)
        generation = int(reply[1])
        if outcome == "done":
            return FinalizationClaim(
                outcome, generation, done_token=str(reply[2]),
                summary_recorded=str(reply[3]) == str(generation),
            )
        return FinalizationClaim(outcome, generation)

    async def check_finalization(
        self, conversation_id: str, token: str, generation: int, claim_s: float
    ) -> str:
        """Before a write: ``ok`` (still ours and this generation; the claim is renewed for
        ``claim_s``), else ``stale`` (claim released), ``lost``, ``done`` or ``no_conversation``."""
        reply = await self._run(
            "finalize_check", [self.conversation_key(conversation_id)],
            [token, generation, _claim_ms(claim_s)],
        )
        return str(reply[0])

    async def commit_finalization(
        self, conversation_id: str, token: str, generation: int, *, merged_transcript: str,
        transcript_json_key: str, transcript_text_key: str, failed_chunks: int,
    ) -> str:
        """Mark ``generation`` finalized with its merged transcript, only for the claim holder and
        if nothing changed: ``ok``, else ``stale`` (claim released), ``lost``, ``done`` or
        ``no_conversation``."""
        reply = await self._run(
            "finalize_commit", [self.conversation_key(conversation_id)],
            [token, generation, *field_pairs({
                "merged_transcript": merged_transcript, "transcript_json_key": transcript_json_key,
                "transcript_text_key": transcript_text_key, "final_failed_chunks": failed_chunks,
            })],
        )
        return str(reply[0])

    async def record_summary_requested(self, conversation_id: str, generation: int) -> None:
        """The summary of ``generation`` was requested (a redelivery need not ask again)."""
        await self.redis.hset(
            self.conversation_key(conversation_id), mapping={"summary_requested_gen": generation}
        )
