"""Finalization: once per conversation generation, merge, write, and ask for the summary.

A conversation is *finalizable* when it is finished and every listed chunk is
in an end state (``transcribed`` or ``failed``; issued chunks that were never
confirmed do not count). The store's transitions are Lua scripts that report
that state atomically, so of "finish" and "the last chunk ended" exactly the
one that comes second sees it and publishes ``conversation.finalize``
(``events.CONVERSATION_FINALIZE``). Duplicates of that
event (a retried request, a redelivery) are expected, so the decision that
counts is made again in Redis by the finalizer:

1. the store's ``begin_finalization`` (``storage/lua/finalize_begin.lua``, like
   every script on the conversation hash) claims the conversation for this
   event (token = the event's id, stable across redeliveries, deferrals and a
   dead-letter replay) unless it
   is finalized, not finalizable, or claimed by another live event; it
   returns the *generation* (``final_gen``: bumped by every chunk listed or
   deleted);
2. the chunks are read and merged in timestamp order; ``transcript.json`` and
   ``transcript.txt`` are written to ``conversation/<id>/`` (fixed keys: a
   repeat overwrites with the same content). Right before each write
   ``check_finalization`` checks that the claim is still ours and the
   generation unchanged, and renews the claim: a finalizer that was slow past
   its claim (``FINALIZATION_CLAIM_S``) or saw a chunk come or go writes
   nothing, so it cannot overwrite a newer generation's files (a single write
   that outlasts the renewed claim still could);
3. ``commit_finalization`` sets ``finalized_ms``, ``is_all_chunks_transcribed``
   and the merged transcript only if the claim is still ours and the
   generation unchanged; if a chunk arrived meanwhile it answers ``stale`` and
   the finalizer starts over (or leaves it to that chunk when it is still open);
4. ``conversation.summarize`` is published on the ``llm`` stream with the
   idempotency key ``summary:<conversation>:<generation>`` and the hash records
   ``summary_requested_gen``; a redelivery of the committing event publishes it
   again only if that record is missing (it died in between).

A chunk that arrives after finalization re-opens the conversation
(``storage/lua/confirm_chunk.lua``): ``finalized_ms`` is cleared, the
generation moves on, and when the chunk ends the conversation is finalized
again, overwriting the transcript files. Deleting a chunk re-opens it the same
way (``storage/lua/delete_chunk.lua``), and the deleting request publishes the
finalize event.
"""

from __future__ import annotations

import json
from typing import Any

import structlog

from config import Settings
from events import catalogue as events
from storage.conversations import ConversationStore
from storage.s3_client import S3Client
from streams.publisher import Publisher
from transcription.metrics import TranscriptionMetrics

log = structlog.get_logger(__name__)

#: Rounds of claim -> read -> commit when chunks keep arriving; then the event is retried.
MAX_ROUNDS = 5


def transcript_keys(conversation_id: str) -> tuple[str, str]:
    """S3 keys of ``transcript.json`` and ``transcript.txt``."""
    base = f"conversation/{conversation_id}"
    return f"{base}/transcript.json", f"{base}/transcript.txt"


def merge_transcript(chunks: list[dict[str, Any]]) -> str:
    """Transcripts of the transcribed chunks in the given (timestamp) order, one paragraph each."""
    return "\n\n".join(
        str(c["transcript"]).strip()
        for c in chunks
        if c.get("status") == "transcribed" and (c.get("transcript") or "").strip()
    )


def transcript_document(
    conversation: dict[str, Any], chunks: list[dict[str, Any]], generation: int, merged: str
) -> dict[str, Any]:
    return {
        "conversation_id": conversation["id"],
        "project_id": conversation.get("project_id"),
        "generation": generation,
        "chunks": [
            {
                "id": c["id"], "timestamp": c.get("timestamp"), "source": c.get("source"),
                "status": c.get("status"), "transcript": c.get("transcript"),
                "error": c.get("error"), "path": c.get("path"),
            }
            for c in chunks
        ],
        "counts": {
            "transcribed": sum(c.get("status") == "transcribed" for c in chunks),
            "failed": sum(c.get("status") == "failed" for c in chunks),
        },
        "text": merged,
    }


class Finalizer:
    """Runs one ``conversation.finalize`` event (see the module doc for the protocol)."""

    def __init__(
        self, *, store: ConversationStore, s3: S3Client, publisher: Publisher,
        settings: Settings, metrics: TranscriptionMetrics,
    ) -> None:
        self._store = store
        self._s3 = s3
        self._publisher = publisher
        self._settings = settings
        self._metrics = metrics

    async def finalize(self, conversation_id: str, token: str, request_id: str = "") -> str:
        """Finalize if this event should; the outcome (``finalized``, ``already``, ``busy``...)."""
        for _ in range(MAX_ROUNDS):
            claim = await self._store.begin_finalization(
                conversation_id, token, self._settings.finalization_claim_s
            )
            if claim.outcome == "done":
                if claim.done_token == token and not claim.summary_recorded:
                    # We committed, then died before the summary request was stored.
                    await self._request_summary(conversation_id, claim.generation, request_id)
                return self._outcome("already")
            if claim.outcome != "claimed":
                return self._outcome(claim.outcome)  # not_ready | busy | no_conversation
            generation = claim.generation
            committed = await self._run_once(conversation_id, token, generation)
            if committed == "ok":
                await self._request_summary(conversation_id, generation, request_id)
                log.info("conversation_finalized", conversation_id=conversation_id,
                         generation=generation)
                return self._outcome("finalized")
            if committed != "stale":
                return self._outcome(committed)  # lost | done | no_conversation
            self._metrics.finalizations.labels("stale").inc()
        raise RuntimeError(f"conversation {conversation_id} kept changing during finalization")

    def _outcome(self, name: str) -> str:
        self._metrics.finalizations.labels(name).inc()
        return name

    async def _run_once(self, conversation_id: str, token: str, generation: int) -> str:
        conversation = await self._store.get_conversation(conversation_id)
        if conversation is None:
            return "no_conversation"
        chunks = await self._store.list_chunks(conversation_id)
        merged = merge_transcript(chunks)
        json_key, text_key = transcript_keys(conversation_id)
        doc = transcript_document(conversation, chunks, generation, merged)
        bucket = self._settings.s3_bucket
        writes = [
            (json_key, "application/json", json.dumps(doc, ensure_ascii=False, indent=1).encode()),
            (text_key, "text/plain; charset=utf-8", (merged + "\n").encode() if merged else b""),
        ]
        for object_key, content_type, body in writes:
            # Still ours, still this generation? (renews the claim for the write)
            check = await self._store.check_finalization(
                conversation_id, token, generation, self._settings.finalization_claim_s
            )
            if check != "ok":
                return check  # stale | lost | done | no_conversation
            await self._s3.put_object(
                Bucket=bucket, Key=object_key, ContentType=content_type, Body=body
            )
        return await self._store.commit_finalization(
            conversation_id, token, generation, merged_transcript=merged,
            transcript_json_key=json_key, transcript_text_key=text_key,
            failed_chunks=doc["counts"]["failed"],
        )

    async def _request_summary(self, conversation_id: str, generation: int, request_id: str) -> None:
        json_key, text_key = transcript_keys(conversation_id)
        await events.publish(
            self._publisher, events.CONVERSATION_SUMMARIZE,
            events.SummarizeRequest(
                conversation_id, generation, transcript_json_key=json_key,
                transcript_text_key=text_key,
            ),
            request_id=request_id,
        )
        await self._store.record_summary_requested(conversation_id, generation)
