"""The Redis-backed store of projects, conversations and chunks.

Key layout (``P`` is ``settings.redis_key_prefix``; braces are Redis Cluster
hash tags, so every key of one conversation lives in one slot and each state
change is one Lua script, atomic against concurrent requests and consumers)::

    P:projects                      zset   project id -> created ms (host listing)
    P:{p:<project>}                 hash   project fields, each JSON-encoded
    P:{p:<project>}:conversations   zset   conversation id -> created ms
    P:{c:<conv>}                    hash   conversation: id, project_id, title, ...,
                                           is_finished, finished_ms, finish_reason,
                                           open_chunks (listed chunks not yet in an end
                                           state), last_activity_ms, finalized_ms,
                                           is_all_chunks_transcribed, summary,
                                           merged_transcript
    P:{c:<conv>}:chunks             zset   listed chunk id -> chunk timestamp ms
    P:{c:<conv>}:chunk:<chunk>      hash   chunk: id, path, status, error, transcript, ...
    P:{c:<conv>}:text               hash   sha256(timestamp, content) -> chunk id
                                           (upload-text de-duplication)
    P:idle                          zset   conversation id -> last activity ms (a hint
                                           for the idle sweeper; the hash is authoritative)

Chunk states: ``issued`` (URL given; the hash has a TTL and is not listed) ->
``pending_verification`` | ``uploaded`` (listed, counted in ``open_chunks``) ->
``transcribing`` -> ``transcribed`` | ``failed`` (end states). Text chunks are
born ``transcribed``. All times come from Redis ``TIME`` inside the scripts.

A conversation is *finalizable* when it is finished, ``open_chunks`` is 0 and
it is not finalized yet; every transition that may make it so returns that
flag, so exactly one caller sees it flip and can publish the finalize event.
"""

from __future__ import annotations

import hashlib
import json
import sys
import uuid
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from redis.asyncio.cluster import RedisCluster

from storage.ratelimit import RateLimitDecision, SlidingWindowLimiter, load_lua
from storage.redis_autopipeline import AutoPipeline, run_script
from storage.redis_client import RedisClient

CHUNK_STATES = ("issued", "pending_verification", "uploaded", "transcribing", "transcribed", "failed")
#: Conversations whose project a store remembers (least recently used forgotten first):
#: about 200 bytes each, so 20 MB at most per process. A remembered conversation costs
#: get-upload-url one Redis round trip, a forgotten one two.
PROJECT_OF_MEMO_SIZE = 100_000
END_STATES = frozenset({"transcribed", "failed"})

PROJECT_FIELDS: dict[str, Any] = {
    "name": "",
    "language": "en",
    "tags": [],
    "is_conversation_allowed": True,
    "is_get_reply_enabled": False,
    "is_verify_enabled": False,
    "is_verify_on_finish_enabled": False,
    "default_conversation_tutorial_slug": None,
    "default_conversation_title": None,
    "default_conversation_description": None,
    "default_conversation_finish_text": None,
    "default_conversation_ask_for_participant_name": False,
    "conversation_ask_for_participant_name_label": None,
}


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


@dataclass(frozen=True, slots=True)
class FinishResult:
    changed: bool
    finalizable: bool


def ms_to_iso(value: str | int | float | None) -> str | None:
    if value in (None, ""):
        return None
    return datetime.fromtimestamp(int(float(value)) / 1000, UTC).isoformat().replace("+00:00", "Z")


def iso_to_ms(value: str) -> int:
    """Epoch ms of an ISO 8601 time (a time without zone is taken as UTC); ValueError if bad."""
    parsed = datetime.fromisoformat(value.strip())
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return int(parsed.timestamp() * 1000)


def _pairs(mapping: Mapping[str, Any]) -> list[str]:
    out: list[str] = []
    for name, value in mapping.items():
        if value is None:
            continue
        out += [name, str(value)]
    return out


class ConversationStore:
    """Projects, conversations and chunks in Redis; transitions are Lua scripts."""

    _SCRIPTS = (
        "create_conversation", "issue_chunk", "issue_chunk_limited", "confirm_chunk", "transition_chunk",
        "add_text_chunk", "delete_chunk", "finish", "mark_finalized", "update_if_exists",
        "idle_take",
    )

    def __init__(
        self, redis: RedisClient, *, key_prefix: str = "echo", autopipeline: AutoPipeline | None = None
    ) -> None:
        self.redis = redis
        self.prefix = key_prefix
        #: When given, the scripts go over it (one write per loop round) rather than the pool.
        self._autopipeline = autopipeline
        #: Scripts may only touch one slot on Cluster (see :meth:`issue_chunk_limited`).
        self.is_cluster = isinstance(redis, RedisCluster)
        # conversation id -> project id never changes: a bounded per-instance memo (a
        # dict in least-recently-used order; project ids interned, so shared).
        self._project_of: dict[str, str] = {}
        prelude = load_lua("_prelude.lua") + load_lua("_sliding_window_fn.lua")
        self._scripts: dict[str, Any] = {
            name: redis.register_script(prelude + "\n" + load_lua(f"{name}.lua"))
            for name in self._SCRIPTS
        }

    # --- key names

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

    def _run(self, name: str, keys: Sequence[str], args: Sequence[Any]) -> Awaitable[Any]:
        return run_script(self._scripts[name], keys, args, self._autopipeline)

    # --- projects

    async def create_project(self, fields: Mapping[str, Any], project_id: str | None = None) -> dict[str, Any]:
        project_id = project_id or str(uuid.uuid4())
        doc = {**PROJECT_FIELDS, **{k: v for k, v in fields.items() if k in PROJECT_FIELDS}}
        now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
        doc.update(id=project_id, created_at=now, updated_at=now)
        encoded = {k: json.dumps(v) for k, v in doc.items()}
        pipe = self.redis.pipeline(transaction=False)
        pipe.hset(self.project_key(project_id), mapping=encoded)
        pipe.zadd(self.projects_key(), {project_id: int(datetime.now(UTC).timestamp() * 1000)})
        await pipe.execute()
        return doc

    async def get_project(self, project_id: str) -> dict[str, Any] | None:
        raw = await self.redis.hgetall(self.project_key(project_id))
        if not raw:
            return None
        doc = dict(PROJECT_FIELDS)
        doc.update({k: json.loads(v) for k, v in raw.items()})
        return doc

    async def update_project(self, project_id: str, changes: Mapping[str, Any]) -> dict[str, Any] | None:
        encoded = {k: json.dumps(v) for k, v in changes.items() if k in PROJECT_FIELDS}
        encoded["updated_at"] = json.dumps(datetime.now(UTC).isoformat().replace("+00:00", "Z"))
        updated = await self._run("update_if_exists", [self.project_key(project_id)], _pairs(encoded))
        if not int(updated):
            return None
        return await self.get_project(project_id)

    async def list_projects(self, limit: int = 1000) -> list[dict[str, Any]]:
        ids = await self.redis.zrange(self.projects_key(), 0, limit - 1)
        projects = [await self.get_project(pid) for pid in ids]
        return [p for p in projects if p is not None]

    # --- conversations

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
            "create_conversation", [self.conversation_key(conversation_id)], _pairs(doc)
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
        assert conversation is not None
        return conversation

    async def get_conversation(self, conversation_id: str) -> dict[str, Any] | None:
        raw = await self.redis.hgetall(self.conversation_key(conversation_id))
        return self._conversation_doc(raw) if raw else None

    @staticmethod
    def _conversation_doc(raw: Mapping[str, str]) -> dict[str, Any]:
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

    async def conversation_gate(self, conversation_id: str) -> tuple[str, bool] | None:
        """``(project_id, is_finished)`` of a conversation, or None: the cheap hot-path lookup."""
        project_id, finished = await self.redis.hmget(
            self.conversation_key(conversation_id), ["project_id", "is_finished"]
        )
        return None if project_id is None else (project_id, finished == "1")

    async def project_of(self, conversation_id: str) -> str | None:
        """The project of a conversation (it never changes: the most recently used are kept
        in memory), or None if unknown."""
        memo = self._project_of
        project_id = memo.pop(conversation_id, None)
        if project_id is not None:
            memo[conversation_id] = project_id  # now the most recently used
            return project_id
        key = self.conversation_key(conversation_id)
        if self._autopipeline is not None:
            project_id = await self._autopipeline.execute("HGET", key, "project_id")
        else:
            project_id = await self.redis.hget(key, "project_id")
        if project_id is not None:
            project_id = sys.intern(project_id)
            memo[conversation_id] = project_id
            if len(memo) > PROJECT_OF_MEMO_SIZE:
                del memo[next(iter(memo))]
        return project_id

    async def project_is_open(self, project_id: str) -> bool | None:
        """Whether the project takes participation (None: unknown project)."""
        raw = await self.redis.hget(self.project_key(project_id), "is_conversation_allowed")
        return None if raw is None else bool(json.loads(raw))

    async def list_conversations(self, project_id: str, limit: int = 1000) -> list[dict[str, Any]]:
        ids = await self.redis.zrange(self.project_conversations_key(project_id), 0, limit - 1)
        pipe = self.redis.pipeline(transaction=False)
        for cid in ids:
            pipe.hgetall(self.conversation_key(cid))
        rows = await pipe.execute() if ids else []
        return [self._conversation_doc(raw) for raw in rows if raw]

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
        seconds, micros = await self.redis.time()
        now_ms = int(seconds) * 1000 + int(micros) // 1000
        idle_ms = int(idle_s * 1000)
        cutoff_ms = now_ms - idle_ms
        rows = await self.redis.zrangebyscore(
            self.idle_key(), "-inf", cutoff_ms, start=0, num=batch, withscores=True
        )
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
            _pairs({"merged_transcript": merged_transcript, "summary": summary}),
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

    async def _touch(self, conversation_id: str, now_ms: int) -> None:
        await self.redis.zadd(self.idle_key(), {conversation_id: now_ms})

    # --- chunks

    async def issue_chunk(
        self, conversation_id: str, chunk_id: str, *, path: str, filename: str,
        content_type: str, ttl_s: float,
    ) -> None:
        reply = await self._run(
            "issue_chunk",
            [self.conversation_key(conversation_id), self.chunk_key(conversation_id, chunk_id)],
            [int(ttl_s * 1000), *_pairs({
                "id": chunk_id, "conversation_id": conversation_id, "path": path,
                "filename": filename, "content_type": content_type,
            })],
        )
        if reply[0] == "no_conversation":
            raise ConversationNotFound(conversation_id)
        if reply[0] == "exists":
            raise StoreError(f"chunk {chunk_id} exists")

    def conversation_limit_key(self, conversation_id: str, name: str) -> str:
        """A rate-limit key in the conversation's slot (see :meth:`issue_chunk_limited`)."""
        return f"{self.conversation_key(conversation_id)}:rl:{name}"

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
            [int(ttl_s * 1000), *limiter.script_args(), *_pairs({
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
             iso_to_ms(timestamp), *_pairs({"timestamp": timestamp, "source": source, **(extra or {})})],
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
            [digest, chunk_id, iso_to_ms(timestamp), *_pairs({
                "id": chunk_id, "conversation_id": conversation_id, "transcript": content,
                "timestamp": timestamp, "source": source,
            })],
        )
        if reply[0] == "no_conversation":
            raise ConversationNotFound(conversation_id)
        if reply[0] == "created":
            await self._touch(conversation_id, int(reply[2]))
        chunk = await self.get_chunk(conversation_id, str(reply[1]))
        assert chunk is not None
        return chunk, reply[0] == "created"

    async def get_chunk(self, conversation_id: str, chunk_id: str) -> dict[str, Any] | None:
        raw = await self.redis.hgetall(self.chunk_key(conversation_id, chunk_id))
        return self._chunk_doc(raw) if raw else None

    @staticmethod
    def _chunk_doc(raw: Mapping[str, str]) -> dict[str, Any]:
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

    async def list_chunks(self, conversation_id: str, limit: int = 10_000) -> list[dict[str, Any]]:
        """Listed chunks (confirmed or text) ordered by timestamp; issued ones are not listed."""
        ids = await self.redis.zrange(self.chunks_key(conversation_id), 0, limit - 1)
        if not ids:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for chunk_id in ids:
            pipe.hgetall(self.chunk_key(conversation_id, chunk_id))
        rows = await pipe.execute()
        return [self._chunk_doc(raw) for raw in rows if raw]

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
            [to, ",".join(allowed_from), *_pairs(fields or {})],
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
