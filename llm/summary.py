"""Conversation summaries: the prompt, the bounded call, and where the result is kept.

Finalization asks for a summary (a ``conversation.summarize`` event); the handler
calls :func:`summarize`, keeps the result in the store as the generation's draft
(:func:`as_draft`), writes it as ``conversation/<id>/summary.json`` to S3 (beside
the transcript files), then stores it on the conversation. A redelivery after a
failed S3 write rebuilds the summary from the draft (:func:`from_draft`) instead of
calling the model again.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any, Protocol

from llm.client import BoundedLlm
from llm.providers import LlmRequest, SummaryTask
from storage.conversations import SummaryDraft

SUMMARY_MAX_OUTPUT_TOKENS = 600
#: Transcript characters sent at most; longer ones keep their start and end.
SUMMARY_MAX_TRANSCRIPT_CHARS = 400_000

SUMMARY_SYSTEM = (
    "You summarise a recorded conversation for a researcher. Write 3 to 6 plain sentences "
    "in the language of the conversation: the topics raised, the views expressed and any "
    "disagreement. No preamble, no lists, no names of participants."
)


@dataclass(frozen=True, slots=True)
class Summary:
    conversation_id: str
    text: str
    provider: str
    model: str
    created_at: float

    def to_json(self) -> dict[str, Any]:
        return {
            "conversation_id": self.conversation_id,
            "summary": self.text,
            "provider": self.provider,
            "model": self.model,
            "created_at": self.created_at,
        }


def as_draft(summary: Summary, generation: int) -> SummaryDraft:
    """The summary as the store keeps it for ``generation`` until it is stored for good."""
    return SummaryDraft(
        generation=generation, text=summary.text, provider=summary.provider,
        model=summary.model, created_at=summary.created_at,
    )


def from_draft(conversation_id: str, draft: SummaryDraft) -> Summary:
    return Summary(
        conversation_id=conversation_id, text=draft.text, provider=draft.provider,
        model=draft.model, created_at=draft.created_at,
    )


class SummarySink(Protocol):
    """Where the conversation store keeps a summary (implemented by the store's owner)."""

    async def save_summary(self, conversation_id: str, summary: Summary) -> None: ...


def summary_s3_key(conversation_id: str) -> str:
    return f"conversation/{conversation_id}/summary.json"


def _clip(transcript: str) -> str:
    if len(transcript) <= SUMMARY_MAX_TRANSCRIPT_CHARS:
        return transcript
    half = SUMMARY_MAX_TRANSCRIPT_CHARS // 2
    return transcript[:half] + "\n[...]\n" + transcript[-half:]


def build_summary_request(transcript: str, language: str | None = None) -> LlmRequest:
    prompt = f"Transcript:\n<transcript>\n{_clip(transcript)}\n</transcript>"
    if language:
        prompt += f"\n\nWrite the summary in language '{language}'."
    return LlmRequest(
        system=SUMMARY_SYSTEM,
        prompt=prompt,
        max_tokens=SUMMARY_MAX_OUTPUT_TOKENS,
        task=SummaryTask(transcript),
    )


async def summarize(
    llm: BoundedLlm, conversation_id: str, transcript: str, language: str | None = None
) -> Summary:
    """One bounded call; raises :class:`llm.client.LlmCallFailed` when it fails for good."""
    completion = await llm.complete(build_summary_request(transcript, language))
    return Summary(
        conversation_id=conversation_id,
        text=completion.text.strip(),
        provider=completion.provider,
        model=completion.model,
        created_at=time.time(),
    )


async def put_summary_s3(s3: Any, bucket: str, summary: Summary) -> str:
    """Write ``summary`` as JSON to S3; returns the key."""
    key = summary_s3_key(summary.conversation_id)
    await s3.put_object(
        Bucket=bucket,
        Key=key,
        Body=json.dumps(summary.to_json(), ensure_ascii=False).encode("utf-8"),
        ContentType="application/json",
    )
    return key
