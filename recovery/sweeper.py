"""The stuck-work sweeper: finds work that no event will move any more, and re-drives it.

Consumer-group reclaim covers a worker that dies holding an entry; it cannot cover an event
that never reached its stream, was trimmed or deleted, or a chunk whose object vanished.
The sweeper walks the conversations a page at a time (the store's rank cursor over each
project's conversations, kept between runs) and looks at each one not finalized:

* a conversation finished (or re-opened) more than ``STUCK_AFTER_S`` ago and not finalized
  is stuck: its ``open_chunks`` counter is recounted from its chunks (one script), and if
  that leaves it finalizable ``conversation.finalize`` is published again;
* a chunk in ``pending_verification``, ``uploaded`` or ``transcribing`` for longer than its
  stage allows (:mod:`recovery.bounds`) is stuck: if its object is gone it is marked
  ``failed`` ("upload not found") so the conversation can finalize; otherwise its event
  (``upload.verify`` or ``chunk.uploaded``) is published again.

Every action is idempotent: a duplicate of an event still in flight is harmless, since the
handlers act on the chunk's state and the finalizer claims a conversation once per
generation. One run executes per ``STUCK_SWEEP_INTERVAL_S`` across the cluster
(:class:`storage.sweep_lease.SweepLease`: a lease with a fencing token), and examines at
most ``STUCK_SWEEP_MAX_ITEMS`` conversations.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import structlog
from botocore.exceptions import BotoCoreError, ClientError

from config import Settings
from events import catalogue as events
from events.catalogue import ChunkUpload, FinalizeRequest
from recovery.alerts import RecoveryMetrics, StuckItem, count_action, report_stuck
from recovery.bounds import NON_TERMINAL, chunk_stage_bounds_s
from storage.conversations import ChunkNotFound, ConversationNotFound, ConversationStore
from storage.recovery_queries import ChunkRow, ConversationFlags, WalkCursor
from storage.redis_client import REDIS_UNAVAILABLE_ERRORS
from storage.s3_client import S3Client
from storage.sweep_lease import LeaseGrant, SweepLease
from storage.uploads import head_object
from streams.publisher import Publisher

log = structlog.get_logger(__name__)

UPLOAD_NOT_FOUND = "upload not found"
#: Conversations read per page (one pipelined read; the cursor is saved after each).
PAGE = 100

REPUBLISHED_VERIFY = "republished_upload_verify"
REPUBLISHED_TRANSCRIBE = "republished_chunk_uploaded"
FAILED_NOT_FOUND = "chunk_failed_upload_not_found"
REPAIRED_OPEN_CHUNKS = "repaired_open_chunks"
REPUBLISHED_FINALIZE = "republished_finalize"
SKIPPED_S3_ERROR = "skipped_s3_error"


class FencedOut(Exception):
    """The sweep's lease expired and another sweep holds a newer token."""


@dataclass(slots=True)
class SweepReport:
    dry_run: bool
    started_ms: int = 0
    examined: int = 0
    items: list[StuckItem] = field(default_factory=list)
    #: The walk reached the last conversation (the next run starts over).
    complete: bool = False
    duration_s: float = 0.0
    #: Conversations whose inspection raised (logged; the run went on).
    errors: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run, "examined": self.examined, "complete": self.complete,
            "duration_s": round(self.duration_s, 3), "errors": self.errors,
            "stuck_conversations": sum(i.kind == "conversation" for i in self.items),
            "stuck_chunks": sum(i.kind == "chunk" for i in self.items),
            "items": [i.as_dict() for i in self.items],
        }


class StuckSweeper:
    """Finds and re-drives stuck conversations and chunks (see the module doc)."""

    def __init__(
        self, *, store: ConversationStore, s3: S3Client, publisher: Publisher, lease: SweepLease,
        settings: Settings, metrics: RecoveryMetrics | None = None, owner: str = "",
    ) -> None:
        self._store = store
        self._s3 = s3
        self._publisher = publisher
        self._lease = lease
        self._settings = settings
        self._metrics = metrics
        self.owner = owner
        self.bounds_s = chunk_stage_bounds_s(settings)

    # -- runs --------------------------------------------------------------------------

    async def run_if_due(self) -> SweepReport | None:
        """Run a sweep if none ran for ``STUCK_SWEEP_INTERVAL_S`` and none is running."""
        return await self._run_with(await self._lease.acquire(
            self.owner, lease_s=self._settings.stuck_sweep_lease_s,
            interval_s=self._settings.stuck_sweep_interval_s,
        ))

    async def run_now(self) -> SweepReport | None:
        """Run a sweep now unless one is running (None then)."""
        return await self._run_with(await self._lease.acquire(
            self.owner, lease_s=self._settings.stuck_sweep_lease_s, interval_s=0
        ))

    async def dry_run(self, limit: int | None = None) -> SweepReport:
        """What a sweep would find now, from the first conversation; nothing is changed."""
        report = SweepReport(dry_run=True, started_ms=await self._store.redis_now_ms())
        await self._walk(report, WalkCursor(), limit or self._settings.stuck_sweep_max_items)
        return report

    async def _walk(
        self, report: SweepReport, cursor: WalkCursor, limit: int,
        after_page: Callable[[WalkCursor], Awaitable[None]] | None = None,
    ) -> None:
        """Examine up to ``limit`` conversations from ``cursor``, a page at a time;
        ``after_page`` gets the cursor after each page (a real run records it)."""
        started = time.monotonic()
        remaining = limit
        while remaining > 0:
            ids, cursor, done = await self._store.walk_conversations(cursor, min(PAGE, remaining))
            remaining -= len(ids)
            await self._examine(ids, report)
            if after_page is not None:
                await after_page(cursor)
            if done or not ids:
                report.complete = done
                break
        report.duration_s = time.monotonic() - started

    async def _run_with(self, grant: LeaseGrant) -> SweepReport | None:
        if grant.outcome != "acquired":
            return None
        report = SweepReport(dry_run=False, started_ms=grant.started_ms)

        async def record(cursor: WalkCursor) -> None:
            if not await self._lease.write(
                grant.token, lease_s=self._settings.stuck_sweep_lease_s,
                fields={"cursor_project": cursor.project, "cursor_conversation": cursor.conversation},
            ):
                raise FencedOut(grant.token)

        await self._walk(report, WalkCursor(grant.cursor_project, grant.cursor_conversation),
                         self._settings.stuck_sweep_max_items, after_page=record)
        figures = report.as_dict()
        del figures["items"], figures["dry_run"]
        finished_ms = await self._lease.finish(
            grant.token, {"token": grant.token, "owner": self.owner,
                          "started_ms": grant.started_ms, **figures},
            {"last_examined": report.examined, "last_stuck": len(report.items)},
        )
        if finished_ms is None:
            raise FencedOut(grant.token)
        if self._metrics is not None:
            self._metrics.runs.labels("ok").inc()
            self._metrics.examined.inc(report.examined)
            self._metrics.last_success.set(finished_ms / 1000)
            self._metrics.last_duration.set(report.duration_s)
        log.info("stuck_sweep_done", owner=self.owner, token=grant.token, **figures)
        return report

    async def run_forever(self, stop: asyncio.Event) -> None:
        """Try a sweep every poll (a quarter of the interval, at most a minute) until ``stop``;
        the lease makes one run per interval across every process doing this."""
        poll_s = max(0.05, min(60.0, self._settings.stuck_sweep_interval_s / 4))
        while not stop.is_set():
            try:
                await self.run_if_due()
            except FencedOut as exc:
                self._count_run("fenced_out")
                log.warning("stuck_sweep_fenced_out", token=str(exc))
            except REDIS_UNAVAILABLE_ERRORS as exc:
                self._count_run("failed")
                log.warning("stuck_sweep_failed", error=str(exc))
            except Exception:
                # The sweeper of this process must not end for good (CancelledError still does).
                self._count_run("failed")
                log.exception("stuck_sweep_failed")
            with contextlib.suppress(*REDIS_UNAVAILABLE_ERRORS):
                await self._refresh_last_success()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), poll_s)

    def _count_run(self, outcome: str) -> None:
        if self._metrics is not None:
            self._metrics.runs.labels(outcome).inc()

    async def _refresh_last_success(self) -> None:
        """The gauge shows the cluster's last sweep, whichever process ran it."""
        last = (await self._lease.state()).get("last_success_ms")
        if last and self._metrics is not None:
            self._metrics.last_success.set(int(last) / 1000)

    # -- one conversation ----------------------------------------------------------------

    async def recover_conversation(self, conversation_id: str) -> dict[str, Any]:
        """Manual recovery: every non-terminal chunk and the conversation itself, whatever
        their age; idempotent (a finalized conversation is left alone). Raises
        :class:`ConversationNotFound`."""
        flags = await self._store.conversation_flags([conversation_id])
        if not flags:
            raise ConversationNotFound(conversation_id)
        now_ms = await self._store.redis_now_ms()
        chunks = (await self._store.chunk_ages([conversation_id]))[conversation_id]
        items = await self._inspect(flags[0], now_ms, chunks, act=True, force=True)
        after = (await self._store.conversation_flags([conversation_id]))[0]
        actions = [a for item in items for a in item.actions]
        log.info("conversation_recovered", conversation_id=conversation_id, actions=actions,
                 stuck=[item.chunk_id or "conversation" for item in items])
        return {
            "conversation_id": conversation_id,
            "was_finalized": flags[0].finalized,
            "is_finished": after.is_finished,
            "open_chunks": after.open_chunks,
            "actions": actions,
            "items": [item.as_dict() for item in items],
        }

    async def _examine(self, ids: list[str], report: SweepReport) -> None:
        act = not report.dry_run
        now_ms = await self._store.redis_now_ms()
        page = await self._store.conversation_flags(ids)
        chunks = await self._store.chunk_ages(
            [f.conversation_id for f in page if self._needs_chunks(f, now_ms)]
        )
        for flags in page:
            report.examined += 1
            try:
                items = await self._inspect(
                    flags, now_ms, chunks.get(flags.conversation_id, []), act=act, force=False
                )
            except REDIS_UNAVAILABLE_ERRORS:
                raise  # the run stops; the next one goes on from the saved cursor
            except Exception:
                # One conversation the sweeper cannot handle (unexpected data, a bug) must not
                # stop every later run at the same place.
                report.errors += 1
                log.exception("stuck_sweep_conversation_failed", conversation_id=flags.conversation_id)
                continue
            report.items += items
            if act:
                for item in items:
                    report_stuck(item, self._metrics)

    def _finished_long_ago(self, flags: ConversationFlags, now_ms: int) -> bool:
        return flags.is_finished and (now_ms - flags.finished_ms) / 1000 > self._settings.stuck_after_s

    def _needs_chunks(self, flags: ConversationFlags, now_ms: int) -> bool:
        """Whether a sweep looks at this conversation's chunks at all."""
        return not flags.finalized and (
            flags.open_chunks > 0 or self._finished_long_ago(flags, now_ms)
        )

    async def _inspect(
        self, flags: ConversationFlags, now_ms: int, chunks: list[ChunkRow], *, act: bool,
        force: bool,
    ) -> list[StuckItem]:
        if flags.finalized or not (force or self._needs_chunks(flags, now_ms)):
            return []
        cid = flags.conversation_id
        conversation: StuckItem | None = None
        if flags.is_finished and (force or self._finished_long_ago(flags, now_ms)):
            conversation = StuckItem(
                "conversation", cid, None, "finished", (now_ms - flags.finished_ms) / 1000,
                self._settings.stuck_after_s, [],
            )
        items: list[StuckItem] = [conversation] if conversation else []
        finalizable = False
        for chunk_id, status, key, content_type, updated_ms in chunks:
            if status not in NON_TERMINAL:
                continue
            chunk_age_s, bound_s = (now_ms - int(updated_ms or 0)) / 1000, self.bounds_s[status]
            if not force and chunk_age_s <= bound_s:
                continue
            item = StuckItem("chunk", cid, chunk_id, status, chunk_age_s, bound_s, [])
            items.append(item)
            if act:
                # The event's payload needs a type; every issued chunk has one.
                upload = ChunkUpload(cid, chunk_id, key, content_type or "application/octet-stream")
                finalizable |= await self._redrive_chunk(item, upload)
        if conversation is not None and act:
            repair = await self._store.repair_open_chunks(cid)
            if repair is not None and repair.old != repair.new:
                self._did(conversation, REPAIRED_OPEN_CHUNKS)
            finalizable |= bool(repair and repair.finalizable)
        if finalizable and items:
            await events.publish(self._publisher, events.CONVERSATION_FINALIZE, FinalizeRequest(cid))
            self._did(items[0], REPUBLISHED_FINALIZE)
        return items

    async def _redrive_chunk(self, item: StuckItem, upload: ChunkUpload) -> bool:
        """Fail the chunk if its object is gone, else publish its event again; whether the
        conversation became finalizable."""
        try:
            found = await head_object(self._s3, bucket=self._settings.s3_bucket, key=upload.key) \
                if upload.key else None
        except (BotoCoreError, ClientError) as exc:
            log.warning("stuck_chunk_head_failed", chunk_id=upload.chunk_id, error=str(exc))
            self._did(item, SKIPPED_S3_ERROR)
            return False
        if found is None:
            try:
                result = await self._store.mark_failed(
                    upload.conversation_id, upload.chunk_id, error=UPLOAD_NOT_FOUND
                )
            except ChunkNotFound:
                return False
            if result.changed:
                self._did(item, FAILED_NOT_FOUND)
            return result.finalizable
        if item.status == "pending_verification":
            await events.publish(self._publisher, events.UPLOAD_VERIFY, upload)
            self._did(item, REPUBLISHED_VERIFY)
        else:
            await events.publish(self._publisher, events.CHUNK_UPLOADED, upload)
            self._did(item, REPUBLISHED_TRANSCRIBE)
        return False

    def _did(self, item: StuckItem, action: str) -> None:
        item.actions.append(action)
        count_action(self._metrics, action)
