"""Providers: one attempt at a model call, nothing more (no retries, no bound).

:class:`AnthropicProvider` wraps the process's single ``AsyncAnthropic`` (SDK
retries off); :class:`OfflineProvider` answers without a network, for a
service started without ``ANTHROPIC_API_KEY``. Both turn failures into
:class:`AttemptFailed`, which the retry loop in :mod:`llm.client` judges.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import anthropic

OFFLINE_MODEL = "offline-extractive"


@dataclass(frozen=True, slots=True)
class SelectionTask:
    """What an auto-select prompt asks, for providers that do not read prompts."""

    query: str
    items: Sequence[tuple[str, str]]  # (conversation id, text)


@dataclass(frozen=True, slots=True)
class SummaryTask:
    """What a summary prompt asks, for providers that do not read prompts."""

    transcript: str
    max_sentences: int = 5


@dataclass(frozen=True, slots=True)
class LlmRequest:
    system: str
    prompt: str
    max_tokens: int
    #: The same request in structured form, which the offline provider answers.
    task: SelectionTask | SummaryTask | None = None


@dataclass(frozen=True, slots=True)
class Completion:
    text: str
    model: str
    provider: str  # "anthropic" | "offline"
    input_tokens: int = 0
    output_tokens: int = 0
    request_id: str | None = None


@dataclass(eq=False)
class AttemptFailed(Exception):
    """One attempt failed. ``status`` is None for timeouts and connection errors."""

    message: str
    status: int | None = None
    kind: str = "connection_error"
    headers: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__init__(self.message)


class PromptTooLong(AttemptFailed):
    """The prompt does not fit the model's context window: split it, do not retry it."""


class Provider(Protocol):
    name: str
    model: str

    async def attempt(self, request: LlmRequest, *, timeout_s: float) -> Completion: ...

    async def close(self) -> None: ...


def _outcome_of(status: int | None) -> str:
    if status is None:
        return "connection_error"
    if status == 429:
        return "rate_limited"
    if status == 529:
        return "overloaded"
    if status == 408:
        return "timeout"
    if status >= 500:
        return "server_error"
    return "client_error"


class AnthropicProvider:
    """One attempt through ``AsyncAnthropic`` (``max_retries=0``: our loop decides)."""

    name = "anthropic"

    def __init__(self, client: anthropic.AsyncAnthropic, model: str) -> None:
        self._client = client
        self.model = model

    @classmethod
    def create(
        cls, *, api_key: str, model: str, base_url: str | None = None, timeout_s: float = 120.0
    ) -> AnthropicProvider:
        client = anthropic.AsyncAnthropic(
            api_key=api_key, base_url=base_url, max_retries=0, timeout=timeout_s
        )
        return cls(client, model)

    async def attempt(self, request: LlmRequest, *, timeout_s: float) -> Completion:
        try:
            message = await self._client.messages.create(
                model=self.model,
                max_tokens=request.max_tokens,
                system=request.system,
                messages=[{"role": "user", "content": request.prompt}],
                timeout=timeout_s,
            )
        except anthropic.APITimeoutError as exc:
            raise AttemptFailed(str(exc), None, "timeout") from exc
        except anthropic.APIConnectionError as exc:
            raise AttemptFailed(str(exc), None, "connection_error") from exc
        except anthropic.APIStatusError as exc:
            headers = {k.lower(): v for k, v in exc.response.headers.items()}
            detail = exc.api_message or str(exc)
            if exc.status_code == 413 or (
                exc.status_code == 400 and "prompt is too long" in detail.lower()
            ):
                raise PromptTooLong(detail, exc.status_code, "prompt_too_long", headers) from exc
            raise AttemptFailed(detail, exc.status_code, _outcome_of(exc.status_code), headers) from exc
        text = "".join(block.text for block in message.content if block.type == "text")
        return Completion(
            text=text,
            model=message.model,
            provider=self.name,
            input_tokens=message.usage.input_tokens,
            output_tokens=message.usage.output_tokens,
            request_id=getattr(message, "_request_id", None),
        )

    async def close(self) -> None:
        await self._client.close()


_WORD = re.compile(r"[^\W_]+", re.UNICODE)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_STOPWORDS = frozenset(
    ["a", "an", "and", "are", "as", "at", "be", "but", "by", "for", "from", "has", "have", "i", "in", "is", "it", "its", "of", "on", "or", "that", "the", "this", "to", "was", "were", "will", "with", "we", "you", "they", "he", "she", "not", "what", "which", "who", "about", "into", "than", "then", "there"]
)


def _words(text: str) -> list[str]:
    return [w.lower() for w in _WORD.findall(text)]


def _stem(word: str) -> str:
    """A light plural folding, so "gardens" meets "garden" (not a real stemmer)."""
    if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
        return word[:-1]
    return word


def keywords(text: str) -> set[str]:
    """Content words of ``text`` (lower case, plurals folded, stop words and 1-letter words
    dropped)."""
    return {_stem(w) for w in _words(text) if len(w) > 1 and w not in _STOPWORDS}


def extractive_summary(transcript: str, max_sentences: int = 5) -> str:
    """The sentences that carry the most frequent content words, in their original order."""
    sentences = [s.strip() for s in _SENTENCE_END.split(transcript.strip()) if s.strip()]
    if len(sentences) <= max_sentences:
        return " ".join(sentences)
    counts: dict[str, int] = {}
    for word in _words(transcript):
        if word not in _STOPWORDS and len(word) > 1:
            counts[word] = counts.get(word, 0) + 1

    def score(sentence: str) -> float:
        words = [w for w in _words(sentence) if w in counts]
        return sum(counts[w] for w in words) / (len(words) + 1)

    ranked = sorted(range(len(sentences)), key=lambda i: score(sentences[i]), reverse=True)
    keep = sorted(ranked[:max_sentences])
    return " ".join(sentences[i] for i in keep)


class OfflineProvider:
    """Answers without a network: extractive summaries, keyword-overlap selection.

    Its completions say ``provider="offline"`` and ``model="offline-extractive"``
    so outputs are labelled. It still goes through the same bound and metrics.
    """

    name = "offline"
    model = OFFLINE_MODEL

    async def attempt(self, request: LlmRequest, *, timeout_s: float) -> Completion:
        task = request.task
        if isinstance(task, SelectionTask):
            wanted = keywords(task.query)
            chosen = [cid for cid, text in task.items if wanted and wanted & keywords(text)]
            text = json.dumps({"selected_conversation_ids": chosen})
        elif isinstance(task, SummaryTask):
            text = extractive_summary(task.transcript, task.max_sentences)
        else:
            raise AttemptFailed("the offline provider needs a structured task", 400, "client_error")
        return Completion(
            text=text,
            model=self.model,
            provider=self.name,
            input_tokens=len(_words(request.system + " " + request.prompt)),
            output_tokens=len(_words(text)),
        )

    async def close(self) -> None:
        return None
