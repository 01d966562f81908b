"""The request and response bodies of the HTTP API, declared once as pydantic models.

Request models validate (strictly: a string is not a number, ``"yes"`` is not a
boolean) and their JSON Schema is what ``/api/openapi.json`` publishes, so the
document and the server cannot disagree. Participant bodies are
:class:`TolerantRequest`: the Echo portal sends fields beyond the contract, so
extras are ignored and the document says ``additionalProperties: true``. Host
bodies are :class:`StrictRequest`: extras are refused (400) and documented as
``additionalProperties: false``.

Response models only document (handlers answer plain dicts, encoded by orjson);
the fuzz test checks every answer against them.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, WithJsonSchema


class StrictRequest(BaseModel):
    """A request body whose extra fields are refused."""

    # Patterns are checked by pydantic's Rust engine, whose reading of them (``$`` ends the
    # string) is JSON Schema's (ECMA 262) for the plain classes they use: no ``\s``, ``\d``
    # or ``\w``, whose meaning differs between engines.
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


class TolerantRequest(StrictRequest):
    """A request body whose extra fields are ignored (the portal sends some)."""

    model_config = ConfigDict(extra="ignore", json_schema_extra={"additionalProperties": True})


def _ci(word: str) -> str:
    """``word`` as a case-insensitive regex (JSON Schema patterns have no flags)."""
    return "".join(f"[{c.lower()}{c.upper()}]" if c.isalpha() else re.escape(c) for c in word)


#: An audio type (or video/mp4, video/webm, which browsers use for audio), parameters such
#: as ``;codecs=opus`` allowed; the same grammar as :func:`storage.uploads.is_audio_content_type`.
AUDIO_CONTENT_TYPE_PATTERN = (
    rf"^[ \t]*(?:{_ci('audio/')}[A-Za-z0-9][A-Za-z0-9.+-]*|{_ci('video/mp4')}|{_ci('video/webm')})"
    r'(?:[ \t]*;[ \t]*[A-Za-z0-9-]+=(?:"[^"]*"|[A-Za-z0-9._+-]+))*[ \t]*$'
)
#: A string with something in it besides spaces, tabs and line breaks.
NOT_BLANK = r"[^ \t\r\n]"


def _iso_time(value: str) -> str:
    try:
        datetime.fromisoformat(value.strip()).timestamp()
    except (ValueError, OverflowError, OSError):
        raise ValueError("must be an ISO 8601 time") from None
    return value.strip()


Str64 = Annotated[str, Field(max_length=64)]
Str128 = Annotated[str, Field(max_length=128)]
Str200 = Annotated[str, Field(max_length=200)]
Str320 = Annotated[str, Field(max_length=320)]
Str500 = Annotated[str, Field(max_length=500)]
Str1000 = Annotated[str, Field(max_length=1000)]
Str5000 = Annotated[str, Field(max_length=5000)]
#: Strings with something in them besides whitespace.
Filled200 = Annotated[str, Field(max_length=200, pattern=NOT_BLANK)]
Filled2000 = Annotated[str, Field(max_length=2000, pattern=NOT_BLANK)]
Filled100k = Annotated[str, Field(max_length=100_000, pattern=NOT_BLANK)]

#: An ISO 8601 time with a zone, kept as the client wrote it (stripped).
Timestamp = Annotated[
    str, AfterValidator(_iso_time),
    WithJsonSchema({"type": "string", "format": "date-time", "maxLength": 64}),
]
#: A language tag such as ``en`` or ``nl-BE``.
Language = Annotated[
    str, Field(min_length=1, max_length=16, pattern=r"^[A-Za-z0-9-]+$"),
]
ContentType = Annotated[
    str, Field(max_length=200, pattern=AUDIO_CONTENT_TYPE_PATTERN), AfterValidator(str.strip)
]


def _unset(description: str | None = None) -> Any:
    """A field that may be absent but, when present, not null."""
    return Field(default=None, description=description, json_schema_extra=_drop_default)


def _drop_default(schema: dict[str, Any]) -> None:
    schema.pop("default", None)


# --- participant requests -------------------------------------------------------------

class InitiateRequest(TolerantRequest):
    name: Str500
    pin: Any = Field(default=None, description="accepted and ignored")
    conversation_id: Any = Field(default=None, description="accepted and ignored")
    email: Str320 | None = None
    user_agent: Str1000 | None = None
    tag_id_list: Annotated[list[UUID], Field(max_length=100)] | None = None
    source: Str64 | None = None
    visitor_id: Str128 | None = None


class UploadUrlRequest(TolerantRequest):
    filename: Annotated[str, Field(min_length=1, max_length=1000)]
    content_type: ContentType
    conversation_id: UUID | None = Field(
        default=None, description="redundant; 400 if it differs from the path")


class ConfirmRequest(TolerantRequest):
    chunk_id: UUID
    file_url: Filled2000
    timestamp: Timestamp
    source: Str64 | None = Field(default=None, description="default PORTAL_AUDIO")


class UploadTextRequest(TolerantRequest):
    timestamp: Timestamp
    content: Filled100k
    source: Str64 | None = Field(default=None, description="default PORTAL_TEXT")


class Telemetry(BaseModel):
    """Recording telemetry; all optional. Any JSON is accepted: what is not telemetry is
    dropped, never an error that disturbs recording."""

    model_config = ConfigDict(extra="allow")
    state: str | None = None
    audio_level: float | None = None
    recorded_seconds: float | None = None
    client_ts: str | None = None
    network: Any = None
    battery: Any = None


class UploadChunkForm(BaseModel):
    """The legacy multipart upload: the ``chunk`` file part (an audio type) streamed to S3.
    Other parts are drained and ignored (their names are header text: no control bytes)."""

    model_config = ConfigDict(json_schema_extra={
        "additionalProperties": True, "propertyNames": {"pattern": "^[A-Za-z0-9_.-]{1,100}$"}})

    chunk: Annotated[bytes, WithJsonSchema(
        {"type": "string", "contentMediaType": "audio/*", "minLength": 1})]
    # Form fields are text: absent, never null.
    timestamp: Timestamp = _unset("default: the time of the upload")
    source: Str64 = _unset("default PORTAL_AUDIO")


# --- host requests ----------------------------------------------------------------------

class TagInput(StrictRequest):
    id: UUID | None = None
    text: Filled200


class ProjectInput(StrictRequest):
    """What a host sets on a project (create or update); absent fields are left alone."""

    name: Str500 | None = None
    language: Language = _unset()
    tags: Annotated[list[TagInput | Filled200], Field(max_length=200)] = _unset(
        "strings or {id?, text}; kept ids survive, new texts get ids")
    is_conversation_allowed: bool = _unset()
    is_get_reply_enabled: bool = _unset()
    is_verify_enabled: bool = _unset()
    is_verify_on_finish_enabled: bool = _unset()
    default_conversation_ask_for_participant_name: bool = _unset()
    default_conversation_tutorial_slug: Str200 | None = None
    default_conversation_title: Str500 | None = None
    default_conversation_description: Str5000 | None = None
    default_conversation_finish_text: Str5000 | None = None
    conversation_ask_for_participant_name_label: Str500 | None = None


class AutoSelectRequest(StrictRequest):
    query: Filled2000
    language: Language | None = None


# --- responses (documentation and the fuzz test's conformance check) ------------------

class Error(BaseModel):
    detail: str
    code: str
    request_id: str | None = None


class Tag(BaseModel):
    id: UUID
    text: str


class PublicProject(BaseModel):
    """A project as the portal sees it (exactly these fields)."""

    id: UUID
    language: str
    tags: list[Tag]
    is_conversation_allowed: bool
    is_get_reply_enabled: bool | None = None
    is_verify_enabled: bool | None = None
    is_verify_on_finish_enabled: bool | None = None
    default_conversation_tutorial_slug: str | None = None
    default_conversation_title: str | None = None
    default_conversation_description: str | None = None
    default_conversation_finish_text: str | None = None
    default_conversation_ask_for_participant_name: bool | None = None
    conversation_ask_for_participant_name_label: str | None = None


class Project(PublicProject):
    """A project as the host sees it."""

    name: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None


ConversationStatus = Literal["open", "finished", "finalized"]


class ChunkCounts(BaseModel):
    pending_verification: int | None = None
    uploaded: int | None = None
    transcribing: int | None = None
    transcribed: int | None = None
    failed: int | None = None
    total: int | None = None


class TranscriptLocation(BaseModel):
    json_key: str | None = None
    text_key: str | None = None


class SummaryState(BaseModel):
    requested: bool | None = None
    ready: bool | None = None
    location: str | None = None


class Processing(BaseModel):
    chunks: ChunkCounts | None = None
    finalized_at: datetime | None = None
    finalizations: int | None = None
    transcript: TranscriptLocation | None = None
    summary: SummaryState | None = None


class Conversation(BaseModel):
    id: UUID
    project_id: UUID
    is_finished: bool
    is_all_chunks_transcribed: bool
    summary: str | None
    title: str | None = None
    description: str | None = None
    participant_name: str | None = None
    participant_email: str | None = None
    source: str | None = None
    tags: list[Tag] | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    last_chunk_at: datetime | None = None
    finished_at: datetime | None = None
    finalized_at: datetime | None = None
    status: ConversationStatus | None = None
    processing_status: ConversationStatus | None = None
    processing: Processing | None = None


ChunkStatus = Literal[
    "issued", "pending_verification", "uploaded", "transcribing", "transcribed", "failed"]


class Chunk(BaseModel):
    id: UUID
    conversation_id: UUID
    status: ChunkStatus
    path: str | None = None
    transcript: str | None = None
    timestamp: str | None = None
    source: str | None = None
    content_type: str | None = None
    filename: str | None = None
    error: str | None = None
    size: int | None = None


class HostConversation(Conversation):
    """A conversation with its chunks and merged transcript."""

    merged_transcript: str | None = None
    chunks: list[Chunk] = []


class UploadUrlResponse(BaseModel):
    chunk_id: UUID
    upload_url: str
    fields: dict[str, str]
    file_url: str


class ConfirmResponse(BaseModel):
    status: Literal["confirmed", "pending_verification", "failed"]
    chunk_id: UUID
    error: str | None = None


class ProbeResponse(BaseModel):
    probe_url: str


class Ok(BaseModel):
    ok: bool


class AutoSelectAccepted(BaseModel):
    job_id: str
    status_url: str
    status: str | None = None


class BatchError(BaseModel):
    batch: int | None = None
    error: str | None = None


class Job(BaseModel):
    job_id: str
    status: Literal["queued", "running", "completed"]
    batches_done: int
    selected_conversation_ids: list[str]
    errors: list[BatchError]
    kind: str | None = None
    project_id: str | None = None
    query: str | None = None
    language: str | None = None
    provider: str | None = None
    model: str | None = None
    batches_total: int | None = None
    dropped_ids: list[str] | None = None
    created_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    note: str | None = None
