"""The chunk state machine: every transition is one Lua script over the conversation's slot.

``issued`` (URL given; the hash has a TTL and is not listed) ->
``pending_verification`` | ``uploaded`` (listed, counted in the conversation's
``open_chunks``) -> ``transcribing`` -> ``transcribed`` | ``failed`` (end states).
Text chunks are born ``transcribed``. A transition that ends the last open
chunk of a finished conversation reports it *finalizable*.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from storage.ratelimit import RateLimitDecision, SlidingWindowLimiter
from storage.store_core import StoreCore, field_pairs, iso_to_ms, ms_to_iso
from storage.store_errors import (
    ChunkKeyMismatch,
    ChunkNotFound,
    ConversationNotFound,
    ProjectClosed,
    ProjectNotFound,
    StoreError,
    WriteLost,
)

CHUNK_STATES = ("issued", "pending_verification", "uploaded", "transcribing", "transcribed", "failed")
END_STATES = frozenset({"transcribed", "failed"})


@dataclass(frozen=True, slots=True)
class ConfirmResult:
    status: str
    #: True when this call made the chunk listed; False for a repeated confirm.
    created: bool


@dataclass(frozen=True, slots=True)
class TransitionResult:
    #: ``ok`` (moved), ``same`` (already there), ``invalid`` (not allowed from ``previous``).
    outcome: str
    previous: str
    #: The conversation is finished and has no chunk left on its way.
    finalizable: bool

    @property
    def changed(self) -> bool:
        return self.outcome == "ok"


def chunk_doc(raw: Mapping[str, str]) -> dict[str, Any]:
    """The API's view of a chunk hash."""
    return {
        "id": raw.get("id"),
        "conversation_id": raw.get("conversation_id"),
        "path": raw.get("path"),
        "filename": raw.get("filename"),
        "content_type": raw.get("content_type"),
        "transcript": raw.get("transcript"),
        "timestamp": raw.get("timestamp"),
        "source": raw.get("source"),
        "status": raw.get("status"),
        "error": raw.get("error") or None,
        "size": int(raw["size"]) if raw.get("size") else None,
        "created_at": ms_to_iso(raw.get("created_ms")),
        "updated_at": ms_to_iso(raw.get("updated_ms")),
    }


class ChunkStore(StoreCore):
    """The chunk part of the store."""

    async def issue_chunk(
        self, conversation_id: str, chunk_id: str, *, path: str, filename: str,
        content_type: str, ttl_s: float,
    ) -> None:
        reply = await self._run(
            "issue_chunk",
            [self.conversation_key(conversation_id), self.chunk_key(conversation_id, chunk_id)],
            [int(ttl_s * 1000), *field_pairs({
                "id": chunk_id, "conversation_id": conversation_id, "path": path,
                "filename": filename, "content_type": content_type,
            })],
        )
        if reply[0] == "no_conversation":
            raise ConversationNotFound(conversation_id)
        if reply[0] == "exists":
            raise StoreError(f"chunk {chunk_id} exists")

    async def issue_chunk_limited(
        self, conversation_id: str, chunk_id: str, *, path: str, filename: str,
        content_type: str, ttl_s: float, limiter: SlidingWindowLimiter,
        project_id: str | None = None,
    ) -> RateLimitDecision:
        """Check the conversation, take a grant from ``limiter`` and issue the chunk: one script.

        ``limiter``'s key for the conversation must be in its slot (``key_fn`` =
        :meth:`conversation_limit_key`). Nothing is issued when the grant is refused.
        With ``project_id`` on a single Redis node the script also checks that the
        project exists and is open (:class:`ProjectNotFound`, :class:`ProjectClosed`);
        on Cluster the caller must check the project first (another slot).
        """
        keys = [self.conversation_key(conversation_id), self.chunk_key(conversation_id, chunk_id),
                limiter.key(conversation_id)]
        if project_id is not None and not self.is_cluster:
            keys.append(self.project_key(project_id))
        reply = await self._run(
            "issue_chunk_limited", keys,
            [int(ttl_s * 1000), *limiter.script_args(), *field_pairs({
                "id": chunk_id, "conversation_id": conversation_id, "path": path,
                "filename": filename, "content_type": content_type,
            })],
        )
        outcome = reply[0]
        if outcome == "no_conversation":
            raise ConversationNotFound(conversation_id)
        if outcome == "no_project":
            raise ProjectNotFound(str(project_id))
        if outcome == "closed":
            raise ProjectClosed(str(project_id))
        return limiter.decision(*reply[1:5])

    async def confirm_chunk(
        self, conversation_id: str, chunk_id: str, *, path: str, timestamp: str, source: str,
        verified: bool, extra: Mapping[str, Any] | None = None,
    ) -> ConfirmResult:
        """List an issued chunk as ``uploaded`` (verified) or ``pending_verification``."""
        reply = await self._run(
            "confirm_chunk",
            [self.conversation_key(conversation_id), self.chunks_key(conversation_id),
             self.chunk_key(conversation_id, chunk_id)],
            [chunk_id, path, "uploaded" if verified else "pending_verification",
             iso_to_ms(timestamp),
             *field_pairs({"timestamp": timestamp, "source": source, **(extra or {})})],
        )
        outcome = reply[0]
        if outcome == "no_conversation":
            raise ConversationNotFound(conversation_id)
        if outcome == "unknown_chunk":
            raise ChunkNotFound(chunk_id)
        if outcome == "key_mismatch":
            raise ChunkKeyMismatch(chunk_id)
        if outcome == "confirmed":
            await self._touch(conversation_id, int(reply[2]))
        return ConfirmResult(status=str(reply[1]), created=outcome == "confirmed")

    async def add_text_chunk(
        self, conversation_id: str, *, content: str, timestamp: str, source: str
    ) -> tuple[dict[str, Any], bool]:
        """A chunk whose transcript is ``content``; the same content and timestamp make no second."""
        digest = hashlib.sha256(json.dumps([timestamp, content]).encode()).hexdigest()
        chunk_id = str(uuid.uuid4())
        reply = await self._run(
            "add_text_chunk",
            [self.conversation_key(conversation_id), self.chunks_key(conversation_id),
             self.chunk_key(conversation_id, chunk_id), self.text_key(conversation_id)],
            [digest, chunk_id, iso_to_ms(timestamp), *field_pairs({
                "id": chunk_id, "conversation_id": conversation_id, "transcript": content,
                "timestamp": timestamp, "source": source,
            })],
        )
        if reply[0] == "no_conversation":
            raise ConversationNotFound(conversation_id)
        if reply[0] == "created":
            await self._touch(conversation_id, int(reply[2]))
        chunk = await self.get_chunk(conversation_id, str(reply[1]))
        if chunk is None:
            raise WriteLost(f"text chunk {reply[1]} was stored but is not there")
        return chunk, reply[0] == "created"

    async def _touch(self, conversation_id: str, now_ms: int) -> None:
        """A chunk was listed: the conversation is active (a hint for the idle sweeper)."""
        await self.redis.zadd(self.idle_key(), {conversation_id: now_ms})

    async def get_chunk(self, conversation_id: str, chunk_id: str) -> dict[str, Any] | None:
        raw = await self.redis.hgetall(self.chunk_key(conversation_id, chunk_id))
        return chunk_doc(cast(dict[str, str], raw)) if raw else None

    async def list_chunks(self, conversation_id: str, limit: int = 10_000) -> list[dict[str, Any]]:
        """Listed chunks (confirmed or text) ordered by timestamp; issued ones are not listed."""
        ids = cast(list[str], await self.redis.zrange(self.chunks_key(conversation_id), 0, limit - 1))
        if not ids:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for chunk_id in ids:
            pipe.hgetall(self.chunk_key(conversation_id, chunk_id))
        rows = await pipe.execute()
        return [chunk_doc(raw) for raw in rows if raw]

    async def chunk_status_counts(self, conversation_id: str) -> dict[str, int]:
        """Listed chunks by state (``issued`` ones are not listed, so never counted)."""
        ids = cast(list[str], await self.redis.zrange(self.chunks_key(conversation_id), 0, -1))
        counts = {state: 0 for state in CHUNK_STATES if state != "issued"}
        if ids:
            async with self.redis.pipeline(transaction=False) as pipe:
                for chunk_id in ids:
                    pipe.hget(self.chunk_key(conversation_id, chunk_id), "status")
                statuses = await pipe.execute()
            for status in statuses:
                if status in counts:
                    counts[status] += 1
        return counts

    async def delete_chunk(self, conversation_id: str, chunk_id: str) -> bool:
        reply = await self._run(
            "delete_chunk",
            [self.conversation_key(conversation_id), self.chunks_key(conversation_id),
             self.chunk_key(conversation_id, chunk_id)],
            [chunk_id],
        )
        return bool(reply[0] == "deleted")

    async def _transition(
        self, conversation_id: str, chunk_id: str, to: str, allowed_from: Sequence[str],
        fields: Mapping[str, Any] | None = None,
    ) -> TransitionResult:
        reply = await self._run(
            "transition_chunk",
            [self.conversation_key(conversation_id), self.chunk_key(conversation_id, chunk_id)],
            [to, ",".join(allowed_from), *field_pairs(fields or {})],
        )
        if reply[0] == "unknown_chunk":
            raise ChunkNotFound(chunk_id)
        finalizable = len(reply) > 2 and bool(int(reply[2]))
        return TransitionResult(outcome=str(reply[0]), previous=str(reply[1]), finalizable=finalizable)

    async def mark_uploaded(self, conversation_id: str, chunk_id: str, *, size: int | None = None) -> TransitionResult:
        """``pending_verification`` -> ``uploaded`` (the object was found)."""
        return await self._transition(
            conversation_id, chunk_id, "uploaded", ["pending_verification"], {"size": size}
        )

    async def mark_transcribing(self, conversation_id: str, chunk_id: str) -> TransitionResult:
        """``uploaded`` -> ``transcribing``."""
        return await self._transition(conversation_id, chunk_id, "transcribing", ["uploaded"])

    async def mark_transcribed(self, conversation_id: str, chunk_id: str, *, transcript: str) -> TransitionResult:
        """``uploaded`` | ``transcribing`` -> ``transcribed`` with its transcript."""
        return await self._transition(
            conversation_id, chunk_id, "transcribed", ["uploaded", "transcribing"],
            {"transcript": transcript, "error": ""},
        )

    async def mark_failed(self, conversation_id: str, chunk_id: str, *, error: str) -> TransitionResult:
        """Any listed, non-end state -> ``failed`` with ``error``."""
        return await self._transition(
            conversation_id, chunk_id, "failed",
            ["pending_verification", "uploaded", "transcribing"], {"error": error},
        )
