"""What the stuck-work sweeper reads and repairs in the conversation store.

The walk goes over ``P:projects`` and each project's ``P:{p:<project>}:conversations`` by
rank, a page at a time (never ``KEYS``): both are ordered by creation time, so new entries
come at the end and a cursor (project rank, conversation rank) stays valid between runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

from storage.store_core import StoreCore
from storage.store_errors import ConversationNotFound

#: Fields of the conversation hash the sweeper looks at.
FLAG_FIELDS = ("id", "is_finished", "finished_ms", "reopened_ms", "finalized_ms", "open_chunks")


#: ``(chunk_id, status, object key, content type, updated_ms)``; ``updated_ms`` as stored
#: (parsed by the caller, so one bad value spoils only its own conversation).
ChunkRow = tuple[str, str, str, str, str]


@dataclass(frozen=True, slots=True)
class WalkCursor:
    project: int = 0
    conversation: int = 0


@dataclass(frozen=True, slots=True)
class ConversationFlags:
    conversation_id: str
    is_finished: bool
    #: When it was last finished or re-opened (ms, Redis time); 0 if never finished.
    finished_ms: int
    finalized: bool
    open_chunks: int


@dataclass(frozen=True, slots=True)
class OpenChunksRepair:
    old: int
    new: int
    finalizable: bool


class RecoveryQueries(StoreCore):
    """The sweeper's part of the store."""

    async def walk_conversations(
        self, cursor: WalkCursor, limit: int
    ) -> tuple[list[str], WalkCursor, bool]:
        """Up to ``limit`` conversation ids from ``cursor``; the next cursor, and whether the
        walk reached the end (the next cursor then starts over)."""
        ids: list[str] = []
        project, position = cursor.project, cursor.conversation
        # Each round moves to the next project or fills the page: at most limit + 2 rounds.
        for _ in range(limit + 2):
            found = cast(list[str], await self.redis.zrange(self.projects_key(), project, project))
            if not found:
                return ids, WalkCursor(), True
            if len(ids) >= limit:
                break
            want = limit - len(ids)
            # One more than wanted, to see whether this project ends here.
            page = cast(list[str], await self.redis.zrange(
                self.project_conversations_key(found[0]), position, position + want
            ))
            ids += page[:want]
            if len(page) <= want:
                project, position = project + 1, 0
            else:
                position += want
        return ids, WalkCursor(project, position), False

    async def conversation_flags(self, ids: list[str]) -> list[ConversationFlags]:
        """The sweeper's view of each existing conversation in ``ids`` (one pipeline)."""
        if not ids:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for cid in ids:
                pipe.hmget(self.conversation_key(cid), list(FLAG_FIELDS))
            rows = cast(list[list[str | None]], await pipe.execute())
        flags: list[ConversationFlags] = []
        for cid, row in zip(ids, rows, strict=True):
            if row[0] is None:
                continue
            flags.append(ConversationFlags(
                conversation_id=cid, is_finished=row[1] == "1",
                finished_ms=max(int(row[2] or 0), int(row[3] or 0)),
                finalized=bool(row[4]), open_chunks=int(row[5] or 0),
            ))
        return flags

    async def chunk_ages(
        self, conversation_ids: list[str]
    ) -> dict[str, list[ChunkRow]]:
        """Per conversation, the :data:`ChunkRow` of each listed chunk: two pipelined round
        trips for all of them."""
        if not conversation_ids:
            return {}
        async with self.redis.pipeline(transaction=False) as pipe:
            for cid in conversation_ids:
                pipe.zrange(self.chunks_key(cid), 0, -1)
            listed = cast(list[list[str]], await pipe.execute())
        pairs = [(cid, chunk_id) for cid, ids in zip(conversation_ids, listed, strict=True)
                 for chunk_id in ids]
        ages: dict[str, list[ChunkRow]] = {cid: [] for cid in conversation_ids}
        if not pairs:
            return ages
        async with self.redis.pipeline(transaction=False) as pipe:
            for cid, chunk_id in pairs:
                pipe.hmget(self.chunk_key(cid, chunk_id),
                           ["status", "path", "content_type", "updated_ms"])
            rows = cast(list[list[str | None]], await pipe.execute())
        for (cid, chunk_id), row in zip(pairs, rows, strict=True):
            if row[0] is not None:
                ages[cid].append((chunk_id, row[0], row[1] or "", row[2] or "", row[3] or ""))
        return ages

    async def repair_open_chunks(self, conversation_id: str) -> OpenChunksRepair | None:
        """Recount ``open_chunks`` from the listed chunks (one script); None when the listing
        changed while it was read (a later sweep tries again)."""
        ids = cast(list[str], await self.redis.zrange(self.chunks_key(conversation_id), 0, -1))
        keys = [self.conversation_key(conversation_id), self.chunks_key(conversation_id),
                *(self.chunk_key(conversation_id, chunk_id) for chunk_id in ids)]
        reply = await self._run("repair_open_chunks", keys, ids)
        if reply[0] == "no_conversation":
            raise ConversationNotFound(conversation_id)
        if reply[0] == "listing_changed":
            return None
        return OpenChunksRepair(old=int(reply[1]), new=int(reply[2]), finalizable=bool(int(reply[3])))
