"""The answers of the admin API (``/api/admin``), declared once for the document.

Where an answer's part is a dataclass of the layer below (:class:`BacklogRow`,
:class:`DeadLetter`, :class:`StuckItem`), the model holds that dataclass itself: pydantic
derives its schema, and the document names it under ``components``.

The admin routes take no JSON bodies; their query and path parameters are declared
with ``query=`` / ``path=`` on ``@endpoint`` (schemas below) and checked by the
handlers against the same bounds.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from events.catalogue import STREAMS
from recovery.alerts import StuckItem
from streams.backlog import BacklogRow
from streams.deadletters import MAX_PAGE, DeadLetter

#: Where a dead letter or a stream is named, the stream's short name.
STREAM_SCHEMA: dict[str, Any] = {"type": "string", "enum": list(STREAMS)}
#: A Redis stream entry id (``<ms>-<seq>``).
ENTRY_ID_SCHEMA: dict[str, Any] = {"type": "string", "pattern": r"^[0-9]{1,19}-[0-9]{1,19}$"}
#: The most conversations one dry run may be asked to examine.
MAX_STUCK_LIMIT = 10_000

DEAD_LETTER_QUERY: dict[str, dict[str, Any]] = {
    "stream": {"required": True, "schema": STREAM_SCHEMA},
    "count": {"schema": {"type": "integer", "minimum": 1, "maximum": MAX_PAGE}},
    "after": {"schema": ENTRY_ID_SCHEMA},
}
STUCK_QUERY: dict[str, dict[str, Any]] = {
    "limit": {"schema": {"type": "integer", "minimum": 1, "maximum": MAX_STUCK_LIMIT}},
}
LETTER_PATH: dict[str, dict[str, Any]] = {
    "stream": STREAM_SCHEMA, "letter_id": {"type": "string", "minLength": 1},
}


class Streams(BaseModel):
    streams: list[BacklogRow]


class DeadLetterPage(BaseModel):
    stream: str
    dead_letters: list[DeadLetter]
    #: Pass as ``after`` for the next page; null when this page is the last.
    next_after: str | None


class Replayed(BaseModel):
    stream: str
    id: str
    replayed_as: str


class Dropped(BaseModel):
    stream: str
    id: str
    dropped: bool


class StuckReport(BaseModel):
    dry_run: bool
    examined: int
    complete: bool
    duration_s: float
    errors: int
    stuck_conversations: int
    stuck_chunks: int
    items: list[StuckItem]


class RecoverResult(BaseModel):
    conversation_id: str
    was_finalized: bool
    is_finished: bool
    open_chunks: int
    actions: list[str]
    items: list[StuckItem]
