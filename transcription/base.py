"""The provider interface: ``await transcriber.transcribe(path, language=..., content_type=...)``.

A provider turns one standalone audio file into text or raises one of
:mod:`transcription.errors`. Providers take a :class:`~transcription.bound.CallBound`
and hold one of its slots for each provider call (never while sleeping
before a retry).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class Segment:
    start_s: float
    end_s: float
    text: str


@dataclass(frozen=True, slots=True)
class TranscriptResult:
    text: str
    language: str | None = None
    duration_s: float | None = None
    segments: tuple[Segment, ...] = field(default_factory=tuple)
    #: Which provider made it (``local``, ``openai``, ``noop``).
    provider: str = ""

    def meta(self) -> dict[str, Any]:
        return {"language": self.language, "duration_s": self.duration_s, "provider": self.provider}


class Transcriber(Protocol):
    name: str

    async def transcribe(
        self, path: Path, *, language: str | None, content_type: str
    ) -> TranscriptResult:
        """The text of the audio at ``path``; raises :mod:`transcription.errors` exceptions."""
        ...


class NoopTranscriber:
    """Answers a fixed text without looking at the audio: for benchmarks of the pipeline itself."""

    name = "noop"

    def __init__(self, text: str = "(no-op transcript)") -> None:
        self._text = text

    async def transcribe(
        self, path: Path, *, language: str | None, content_type: str
    ) -> TranscriptResult:
        return TranscriptResult(text=self._text, language=language, provider=self.name)
