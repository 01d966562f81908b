"""The state changes the conversation store refuses: one family, so the HTTP layer maps each kind
to a status and catches nothing broader."""

from __future__ import annotations


class StoreError(Exception):
    """A state change the store refused; the HTTP layer maps each kind to a status."""


class ConversationNotFound(StoreError):
    pass


class ChunkNotFound(StoreError):
    pass


class ChunkKeyMismatch(StoreError):
    pass


class ProjectNotFound(StoreError):
    pass


class ProjectClosed(StoreError):
    """The project does not take participation (``is_conversation_allowed`` false)."""
