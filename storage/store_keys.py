"""Names of the conversation store's Redis keys, in one place (layout: :mod:`storage.conversations`).

Every key of one conversation carries the hash tag ``{c:<conv>}`` and every key
of one project ``{p:<project>}``, so each state change is one Lua script on one
Redis Cluster slot.
"""

from __future__ import annotations


class StoreKeys:
    """Key names under ``prefix`` (``settings.redis_key_prefix``)."""

    def __init__(self, key_prefix: str = "echo") -> None:
        self.prefix = key_prefix

    def projects_key(self) -> str:
        return f"{self.prefix}:projects"

    def project_key(self, project_id: str) -> str:
        return f"{self.prefix}:{{p:{project_id}}}"

    def project_conversations_key(self, project_id: str) -> str:
        return f"{self.project_key(project_id)}:conversations"

    def conversation_key(self, conversation_id: str) -> str:
        return f"{self.prefix}:{{c:{conversation_id}}}"

    def chunks_key(self, conversation_id: str) -> str:
        return f"{self.conversation_key(conversation_id)}:chunks"

    def chunk_key(self, conversation_id: str, chunk_id: str) -> str:
        return f"{self.conversation_key(conversation_id)}:chunk:{chunk_id}"

    def text_key(self, conversation_id: str) -> str:
        return f"{self.conversation_key(conversation_id)}:text"

    def idle_key(self) -> str:
        return f"{self.prefix}:idle"

    def conversation_limit_key(self, conversation_id: str, name: str) -> str:
        """A rate-limit key in the conversation's slot (see ``ChunkStore.issue_chunk_limited``)."""
        return f"{self.conversation_key(conversation_id)}:rl:{name}"
