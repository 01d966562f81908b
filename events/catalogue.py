"""Every stream, consumer group and event type of the pipeline, with its payload, once.

Stream and group names are stable: operators read them with ``redis-cli``
(``XINFO GROUPS echo:{uploads}``). Each :class:`EventType` ties an event's
name to its stream, its typed payload and its idempotency key, so a publisher
and a consumer cannot disagree about any of them.

| event | stream | payload | idempotency key |
|---|---|---|---|
| ``upload.verify`` | ``uploads`` | :class:`ChunkUpload` | ``verify:<chunk>`` |
| ``chunk.uploaded`` | ``transcription`` | :class:`ChunkUpload` | ``transcribe:<chunk>`` |
| ``conversation.finalize`` | ``transcription`` | :class:`FinalizeRequest` | ``finalize:<conversation>`` |
| ``conversation.summarize`` | ``llm`` | :class:`SummarizeRequest` | ``summary:<conversation>:<generation>`` |
| ``auto_select.requested`` | ``llm`` | :class:`AutoSelectRequest` | ``auto-select:<job>`` |
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from streams.publisher import Publisher

# Streams, and the consumer group reading each.
UPLOADS = "uploads"
TRANSCRIPTION = "transcription"
LLM = "llm"
STREAMS: tuple[str, ...] = (UPLOADS, TRANSCRIPTION, LLM)

UPLOAD_CONFIRMATION_GROUP = "upload-confirmation"
TRANSCRIPTION_GROUP = "transcription"
LLM_GROUP = "llm"


def _required_str(payload: Mapping[str, Any], name: str, event: str) -> str:
    value = payload.get(name)
    if not isinstance(value, str) or not value:
        raise ValueError(f"{event} needs a non-empty string {name}")
    return value


def _optional_str(payload: Mapping[str, Any], name: str) -> str | None:
    value = payload.get(name)
    return value if isinstance(value, str) and value else None


@dataclass(frozen=True, slots=True)
class ChunkUpload:
    """An uploaded chunk's object: to verify (``upload.verify``) or transcribe (``chunk.uploaded``)."""

    conversation_id: str
    chunk_id: str
    key: str
    content_type: str

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any]) -> ChunkUpload:
        names = ("conversation_id", "chunk_id", "key", "content_type")
        values = [_required_str(payload, n, "a chunk upload event") for n in names]
        return cls(*values)

    def as_payload(self) -> dict[str, Any]:
        return {
            "conversation_id": self.conversation_id, "chunk_id": self.chunk_id,
            "key": self.key, "content_type": self.content_type,
        }


@dataclass(frozen=True, slots=True)
class FinalizeRequest:
    """A conversation that became finalizable (finished, every listed chunk ended)."""

    conversation_id: str

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any]) -> FinalizeRequest:
        return cls(_required_str(payload, "conversation_id", "conversation.finalize"))

    def as_payload(self) -> dict[str, Any]:
        return {"conversation_id": self.conversation_id}


@dataclass(frozen=True, slots=True)
class SummarizeRequest:
    """A finalized generation of a conversation whose merged transcript wants a summary."""

    conversation_id: str
    generation: int
    transcript_json_key: str = ""
    transcript_text_key: str = ""
    language: str | None = None

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any]) -> SummarizeRequest:
        return cls(
            conversation_id=_required_str(payload, "conversation_id", "conversation.summarize"),
            generation=int(payload.get("generation", 0)),
            transcript_json_key=_optional_str(payload, "transcript_json_key") or "",
            transcript_text_key=_optional_str(payload, "transcript_text_key") or "",
            language=_optional_str(payload, "language"),
        )

    def as_payload(self) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "conversation_id": self.conversation_id, "generation": self.generation,
            "transcript_json_key": self.transcript_json_key,
            "transcript_text_key": self.transcript_text_key,
        }
        if self.language:
            payload["language"] = self.language
        return payload


@dataclass(frozen=True, slots=True)
class AutoSelectRequest:
    """A host's question: which of the project's conversations are relevant to ``query``."""

    job_id: str
    project_id: str
    query: str
    language: str | None = None

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any]) -> AutoSelectRequest:
        event = "auto_select.requested"
        return cls(
            job_id=_required_str(payload, "job_id", event),
            project_id=_required_str(payload, "project_id", event),
            query=_required_str(payload, "query", event),
            language=_optional_str(payload, "language"),
        )

    def as_payload(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id, "project_id": self.project_id, "query": self.query,
            "language": self.language,
        }


class _Payload(Protocol):
    def as_payload(self) -> dict[str, Any]: ...


P = TypeVar("P", bound=_Payload)


@dataclass(frozen=True, slots=True)
class EventType(Generic[P]):
    """One event type: its name, the stream it goes to, its payload and its idempotency key."""

    name: str
    stream: str
    parse: Callable[[Mapping[str, Any]], P]
    idempotency_key: Callable[[P], str]


UPLOAD_VERIFY: EventType[ChunkUpload] = EventType(
    "upload.verify", UPLOADS, ChunkUpload.from_payload, lambda p: f"verify:{p.chunk_id}"
)
CHUNK_UPLOADED: EventType[ChunkUpload] = EventType(
    "chunk.uploaded", TRANSCRIPTION, ChunkUpload.from_payload, lambda p: f"transcribe:{p.chunk_id}"
)
CONVERSATION_FINALIZE: EventType[FinalizeRequest] = EventType(
    "conversation.finalize", TRANSCRIPTION, FinalizeRequest.from_payload,
    lambda p: f"finalize:{p.conversation_id}",
)
CONVERSATION_SUMMARIZE: EventType[SummarizeRequest] = EventType(
    "conversation.summarize", LLM, SummarizeRequest.from_payload,
    lambda p: f"summary:{p.conversation_id}:{p.generation}",
)
AUTO_SELECT_REQUESTED: EventType[AutoSelectRequest] = EventType(
    "auto_select.requested", LLM, AutoSelectRequest.from_payload,
    lambda p: f"auto-select:{p.job_id}",
)

EVENT_TYPES: tuple[EventType[Any], ...] = (
    UPLOAD_VERIFY, CHUNK_UPLOADED, CONVERSATION_FINALIZE, CONVERSATION_SUMMARIZE,
    AUTO_SELECT_REQUESTED,
)


def parsers(*events: EventType[Any]) -> dict[str, Callable[[Mapping[str, Any]], Any]]:
    """``GroupSpec.event_types`` for a group handling ``events``."""
    return {event.name: event.parse for event in events}


async def publish(
    publisher: Publisher, event: EventType[P], payload: P, *, request_id: str = ""
) -> str:
    """Store one event on its stream; returns the entry id once Redis has it."""
    return await publisher.publish(
        event.stream, event.name, payload.as_payload(),
        idempotency_key=event.idempotency_key(payload), request_id=request_id,
    )
