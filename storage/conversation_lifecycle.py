"""Conversations: creation, the views of the hash, finish (by request or idleness), finalized.

A conversation is *finalizable* when it is finished, ``open_chunks`` is 0 and
it is not finalized yet; every transition that may make it so returns that
flag, so exactly one caller sees it flip and can publish the finalize event.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

from storage.project_memo import ProjectMemo
from storage.redis_autopipeline import AutoPipeline
from storage.redis_client import RedisClient
from storage.store_core import StoreCore, field_pairs, ms_to_iso
from storage.store_errors import ConversationNotFound, StoreError, WriteLost


@dataclass(frozen=True, slots=True)
class FinishResult:
    changed: bool
    finalizable: bool


def conversation_doc(raw: Mapping[str, str]) -> dict[str, Any]:
    """The API's view of a conversation hash."""
    finished = raw.get("is_finished") == "1"
    finalized = bool(raw.get("finalized_ms"))
    return {
        "id": raw["id"],
        "project_id": raw.get("project_id"),
        "title": raw.get("title"),
        "description": raw.get("description"),
        "participant_name": raw.get("participant_name"),
        "participant_email": raw.get("participant_email"),
        "source": raw.get("source"),
        "visitor_id": raw.get("visitor_id"),
        "tags": json.loads(raw["tags"]) if raw.get("tags") else [],
        "created_at": ms_to_iso(raw.get("created_ms")),
        "updated_at": ms_to_iso(raw.get("updated_ms")),
        "last_chunk_at": ms_to_iso(raw.get("last_chunk_ms")),
        "is_finished": finished,
        "finished_at": ms_to_iso(raw.get("finished_ms")),
        "finish_reason": raw.get("finish_reason"),
        "is_all_chunks_transcribed": raw.get("is_all_chunks_transcribed") == "1",
        "finalized_at": ms_to_iso(raw.get("finalized_ms")),
        "open_chunks": int(raw.get("open_chunks") or 0),
        "summary": raw.get("summary"),
        "merged_transcript": raw.get("merged_transcript"),
        "status": "finalized" if finalized else ("finished" if finished else "open"),
    }


class ConversationLifecycle(StoreCore):
    """The conversation part of the store (chunks: :class:`storage.chunks.ChunkStore`)."""

    def __init__(
        self, redis: RedisClient, *, key_prefix: str = "echo", autopipeline: AutoPipeline | None = None
    ) -> None:
        super().__init__(redis, key_prefix=key_prefix, autopipeline=autopipeline)
        self._project_of = ProjectMemo()

    async def create_conversation(
        self, project_id: str, fields: Mapping[str, Any], conversation_id: str | None = None
    ) -> dict[str, Any]:
        conversation_id = conversation_id or str(uuid.uuid4())
        doc = {k: v for k, v in fields.items() if v is not None}
        doc["id"] = conversation_id
        doc["project_id"] = project_id
        if "tags" in doc:
            doc["tags"] = json.dumps(doc["tags"])
        created_ms = int(await self._run(
            "create_conversation", [self.conversation_key(conversation_id)], field_pairs(doc)
        ))
        if not created_ms:
            raise StoreError(f"conversation {conversation_id} exists")
        # The index lives in the project's slot, so it is a second command; a
        # conversation whose indexing failed is still complete, just not listed.
        pipe = self.redis.pipeline(transaction=False)
        pipe.zadd(self.project_conversations_key(project_id), {conversation_id: created_ms})
        pipe.zadd(self.idle_key(), {conversation_id: created_ms})
        await pipe.execute()
        conversation = await self.get_conversation(conversation_id)
        if conversation is None:
            raise WriteLost(f"conversation {conversation_id} was created but is not there")
        return conversation

    async def get_conversation(self, conversation_id: str) -> dict[str, Any] | None:
        raw = await self.redis.hgetall(self.conversation_key(conversation_id))
        return conversation_doc(cast(dict[str, str], raw)) if raw else None

    async def conversation_gate(self, conversation_id: str) -> tuple[str, bool] | None:
        """``(project_id, is_finished)`` of a conversation, or None: the cheap hot-path lookup."""
        project_id, finished = cast(list[str | None], await self.redis.hmget(
            self.conversation_key(conversation_id), ["project_id", "is_finished"]
        ))
        return None if project_id is None else (project_id, finished == "1")

    async def project_of(self, conversation_id: str) -> str | None:
        """The project of a conversation (it never changes: the most recently used are kept
        in memory), or None if unknown."""
        project_id = self._project_of.get(conversation_id)
        if project_id is not None:
            return project_id
        key = self.conversation_key(conversation_id)
        if self._autopipeline is not None:
            project_id = await self._autopipeline.execute("HGET", key, "project_id")
        else:
            project_id = cast("str | None", await self.redis.hget(key, "project_id"))
        if project_id is not None:
            project_id = self._project_of.put(conversation_id, project_id)
        return project_id

    async def list_conversations(self, project_id: str, limit: int = 1000) -> list[dict[str, Any]]:
        ids = cast(list[str], await self.redis.zrange(
            self.project_conversations_key(project_id), 0, limit - 1
        ))
        pipe = self.redis.pipeline(transaction=False)
        for cid in ids:
            pipe.hgetall(self.conversation_key(cid))
        rows = await pipe.execute() if ids else []
        return [conversation_doc(raw) for raw in rows if raw]

    async def finish(self, conversation_id: str, reason: str = "participant") -> FinishResult:
        """Mark finished (idempotent); raises :class:`ConversationNotFound`."""
        reply = await self._run("finish", [self.conversation_key(conversation_id)], [reason, ""])
        if reply[0] == "no_conversation":
            raise ConversationNotFound(conversation_id)
        return FinishResult(changed=bool(int(reply[1])), finalizable=bool(int(reply[2])))

    async def finish_idle(
        self, idle_s: float, *, batch: int = 100, retry_s: float = 30.0
    ) -> list[tuple[str, FinishResult]]:
        """Finish up to ``batch`` conversations idle for ``idle_s``; safe in many processes.

        Returns the finished conversations this call took from the idle set: ``changed``
        when it finished them, else finished before (e.g. by a sweep whose finalize publish
        failed). They stay in the set, hidden from every sweep for ``retry_s``: the caller
        publishes the finalize event of the finalizable ones, then calls :meth:`forget_idle`;
        if it fails in between, a sweep takes them again after ``retry_s``.
        """
        now_ms = await self.redis_now_ms()
        idle_ms = int(idle_s * 1000)
        cutoff_ms = now_ms - idle_ms
        rows = cast(list[tuple[str, float]], await self.redis.zrangebyscore(
            self.idle_key(), "-inf", cutoff_ms, start=0, num=batch, withscores=True
        ))
        taken: list[tuple[str, FinishResult]] = []
        for cid, score in rows:
            if not int(await self._run(
                "idle_take", [self.idle_key()], [cid, score, cutoff_ms + int(retry_s * 1000)]
            )):
                continue  # another sweeper took it
            reply = await self._run("finish", [self.conversation_key(cid)], ["idle", idle_ms])
            if reply[0] == "active":
                await self.redis.zadd(self.idle_key(), {cid: int(reply[1])})
            elif reply[0] == "finished":
                taken.append((cid, FinishResult(
                    changed=bool(int(reply[1])), finalizable=bool(int(reply[2]))
                )))
            else:
                await self.forget_idle(cid)  # no such conversation
        return taken

    async def forget_idle(self, conversation_id: str) -> None:
        """Drop a finished conversation from the idle set (see :meth:`finish_idle`)."""
        await self.redis.zrem(self.idle_key(), conversation_id)

    async def mark_finalized(
        self, conversation_id: str, *, merged_transcript: str, summary: str | None
    ) -> str:
        """Store the merged transcript and summary; ``ok`` | ``already`` | ``not_ready``."""
        reply = await self._run(
            "mark_finalized", [self.conversation_key(conversation_id)],
            field_pairs({"merged_transcript": merged_transcript, "summary": summary}),
        )
        if reply[0] == "no_conversation":
            raise ConversationNotFound(conversation_id)
        return str(reply[0])

    async def is_finalizable(self, conversation_id: str) -> bool:
        """Finished, every listed chunk in an end state, and not finalized yet."""
        c = await self.get_conversation(conversation_id)
        return bool(c and c["is_finished"] and c["open_chunks"] <= 0 and not c["finalized_at"])

    async def all_chunks_done(self, conversation_id: str) -> bool:
        """Every listed chunk is transcribed or failed (issued chunks do not count)."""
        value = await self.redis.hget(self.conversation_key(conversation_id), "open_chunks")
        return value is not None and int(value) <= 0
