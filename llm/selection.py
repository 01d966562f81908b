"""Auto-select: pack conversations into batches, ask the model per batch, parse strictly, merge.

Each batch is one bounded model call that must answer exactly
``{"selected_conversation_ids": [...]}``. Ids the batch did not contain are
dropped; a batch too large for the model's context is split (by estimate
before sending, and in halves when the provider says the prompt is too long);
a failed batch is recorded as such and the others still count.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog

from llm.client import BoundedLlm, LlmCallFailed
from llm.providers import LlmRequest, PromptTooLong, SelectionTask

log = structlog.get_logger(__name__)

TRANSCRIPT_EXCERPT_CHARS = 500
SELECT_MAX_OUTPUT_TOKENS = 2048
#: Characters per token we assume when estimating; conservative (real text is ~4).
CHARS_PER_TOKEN = 3.0
_PROMPT_OVERHEAD_TOKENS = 400

SELECT_SYSTEM = (
    "You help a researcher pick conversations that are relevant to their question. "
    "You receive a question and a numbered list of conversations, each with an id. "
    'Answer with one JSON object and nothing else: {"selected_conversation_ids": [<ids>]}, '
    "listing the ids of the relevant conversations exactly as given, or an empty list."
)

Item = tuple[str, str]  # (conversation id, text shown to the model)


class ConversationSource(Protocol):
    """What auto-select needs from the conversation store."""

    async def conversations_for_selection(
        self, project_id: str
    ) -> list[tuple[str, str | None, str | None]]:
        """``(conversation_id, summary or None, transcript or None)`` in a stable order."""
        ...


def selection_text(summary: str | None, transcript: str | None) -> str | None:
    """The summary, else the first 500 characters of the transcript, else None (skipped)."""
    if summary and summary.strip():
        return summary.strip()
    if transcript and transcript.strip():
        return transcript.strip()[:TRANSCRIPT_EXCERPT_CHARS]
    return None


def items_for_selection(rows: Iterable[tuple[str, str | None, str | None]]) -> list[Item]:
    items = []
    for conversation_id, summary, transcript in rows:
        text = selection_text(summary, transcript)
        if text is not None:
            items.append((conversation_id, text))
    return items


def estimate_tokens(text: str) -> int:
    return int(len(text) / CHARS_PER_TOKEN) + 1


def prompt_budget_tokens(context_tokens: int) -> int:
    """Tokens a selection prompt may use in a model with ``context_tokens``."""
    return max(256, context_tokens - SELECT_MAX_OUTPUT_TOKENS - _PROMPT_OVERHEAD_TOKENS)


def _item_block(item: Item) -> str:
    conversation_id, text = item
    return f'<conversation id="{conversation_id}">\n{text}\n</conversation>'


def pack_batches(items: Sequence[Item], batch_size: int, budget_tokens: int) -> list[list[Item]]:
    """Batches of at most ``batch_size`` items whose estimated prompt fits ``budget_tokens``.

    An item too large on its own is cut to fit.
    """
    batches: list[list[Item]] = []
    current: list[Item] = []
    used = 0
    for conversation_id, text in items:
        cost = estimate_tokens(_item_block((conversation_id, text)))
        if cost > budget_tokens:
            keep_chars = max(1, int((budget_tokens - 50) * CHARS_PER_TOKEN))
            text = text[:keep_chars]
            cost = estimate_tokens(_item_block((conversation_id, text)))
        if current and (len(current) >= batch_size or used + cost > budget_tokens):
            batches.append(current)
            current, used = [], 0
        current.append((conversation_id, text))
        used += cost
    if current:
        batches.append(current)
    return batches


def build_request(query: str, items: Sequence[Item], language: str | None = None) -> LlmRequest:
    parts = [f"Question: {query}"]
    if language:
        parts.append(f"The conversations are in language '{language}'.")
    parts.append("Conversations:")
    parts.extend(_item_block(item) for item in items)
    parts.append(
        'Answer only with {"selected_conversation_ids": [...]} using ids from the list above.'
    )
    return LlmRequest(
        system=SELECT_SYSTEM,
        prompt="\n\n".join(parts),
        max_tokens=SELECT_MAX_OUTPUT_TOKENS,
        task=SelectionTask(query=query, items=tuple(items)),
    )


class MalformedOutput(ValueError):
    """The model's answer is not the JSON object we asked for."""


_FENCE = re.compile(r"^```(?:json)?\s*\n(.*)\n```$", re.DOTALL)


def parse_selection(text: str) -> list[str]:
    """The ids of ``{"selected_conversation_ids": [str, ...]}``; anything else is malformed.

    Only surrounding whitespace and one Markdown code fence are tolerated.
    """
    body = text.strip()
    fenced = _FENCE.match(body)
    if fenced:
        body = fenced.group(1).strip()
    try:
        value: Any = json.loads(body)
    except json.JSONDecodeError as exc:
        raise MalformedOutput(f"not JSON: {exc.msg}") from None
    if not isinstance(value, dict) or "selected_conversation_ids" not in value:
        raise MalformedOutput('expected an object with "selected_conversation_ids"')
    ids = value["selected_conversation_ids"]
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise MalformedOutput('"selected_conversation_ids" must be a list of strings')
    return ids


@dataclass
class BatchResult:
    """What one batch gave: the selected ids (in the batch's order) or an error."""

    index: int
    selected: list[str] = field(default_factory=list)
    dropped_ids: list[str] = field(default_factory=list)
    error: str | None = None
    calls: int = 0
    provider: str | None = None
    model: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "selected": self.selected,
            "dropped_ids": self.dropped_ids,
            "error": self.error,
            "calls": self.calls,
            "provider": self.provider,
            "model": self.model,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> BatchResult:
        return cls(**data)


async def select_batch(
    llm: BoundedLlm,
    query: str,
    items: Sequence[Item],
    *,
    index: int = 0,
    language: str | None = None,
) -> BatchResult:
    """Run one batch; split it in halves while the provider says it is too long."""
    result = BatchResult(index=index)
    await _select_into(llm, query, list(items), language, result)
    return result


async def _select_into(
    llm: BoundedLlm, query: str, items: list[Item], language: str | None, result: BatchResult
) -> None:
    if not items:
        return
    request = build_request(query, items, language)
    result.calls += 1
    try:
        completion = await llm.complete(request)
    except PromptTooLong:
        if len(items) == 1:
            result.error = f"conversation {items[0][0]} is too long for the model's context"
            return
        middle = len(items) // 2
        log.info("llm_batch_split", index=result.index, size=len(items))
        await _select_into(llm, query, items[:middle], language, result)
        await _select_into(llm, query, items[middle:], language, result)
        return
    except LlmCallFailed as exc:
        result.error = f"model call failed ({exc.kind}): {exc}"
        return
    result.provider, result.model = completion.provider, completion.model
    try:
        answered = parse_selection(completion.text)
    except MalformedOutput as exc:
        result.error = f"malformed model output: {exc}"
        log.warning("llm_malformed_selection", index=result.index, error=str(exc))
        return
    in_batch = [cid for cid, _ in items]
    allowed = set(in_batch)
    chosen = set(answered)
    result.dropped_ids.extend(cid for cid in dict.fromkeys(answered) if cid not in allowed)
    # The batch's own order, without duplicates.
    result.selected.extend(cid for cid in in_batch if cid in chosen)


def merge_selected(results: Iterable[BatchResult | None]) -> list[str]:
    """Every batch's selection in batch order, each id once."""
    merged: dict[str, None] = {}
    for result in results:
        if result is not None:
            merged.update(dict.fromkeys(result.selected))
    return list(merged)
