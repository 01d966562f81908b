"""A bounded memo of conversation -> project: a conversation never changes project, so the hot
path (get-upload-url) asks Redis once per conversation rather than once per request."""

from __future__ import annotations

import sys

#: Conversations a store remembers (least recently used forgotten first): about 200 bytes
#: each, so 20 MB at most per process. A remembered conversation costs get-upload-url one
#: Redis round trip, a forgotten one two.
PROJECT_OF_MEMO_SIZE = 100_000


class ProjectMemo:
    """Least-recently-used memo, one per store instance (never shared between processes)."""

    def __init__(self, size: int = PROJECT_OF_MEMO_SIZE) -> None:
        self._size = size
        # A dict in least-recently-used order; project ids interned, so shared.
        self._project_of: dict[str, str] = {}

    def get(self, conversation_id: str) -> str | None:
        """The remembered project (now the most recently used), or None."""
        project_id = self._project_of.pop(conversation_id, None)
        if project_id is not None:
            self._project_of[conversation_id] = project_id
        return project_id

    def put(self, conversation_id: str, project_id: str) -> str:
        """Remember ``project_id`` (interned) and return it; forgets the oldest when full."""
        project_id = sys.intern(project_id)
        self._project_of[conversation_id] = project_id
        if len(self._project_of) > self._size:
            del self._project_of[next(iter(self._project_of))]
        return project_id

    def __len__(self) -> int:
        return len(self._project_of)
