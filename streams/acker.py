"""The acker of one group: what workers tell Redis on the hot path, batched into one script.

Workers report two things per entry: a handler *started* (its start marker in
the stream's ``attempts`` hash, :mod:`streams.attempts`) and a handler
*returned* (ack, and its ``errors`` / ``attempts`` fields go). Both wait here
and go out together in one ``ack.lua`` call per batch, so recording starts adds
no round trip per entry: the acker sends as soon as it runs again, and while
one batch is in flight the next one gathers (a batch every round trip, i.e.
every few ms or less). A start whose entry is acked in the same batch is not
written at all, nor its field deleted.

Losing a start marker (the process dies between a start and the next batch)
only means the next worker counts one attempt fewer: one extra attempt, the
safe direction; the raw delivery cap still bounds it.

Scripts that write or remove an entry's marker themselves (failure, deferral,
dead letter) call :meth:`Acker.settle` first, so no queued or in-flight batch
writes a stale marker after them.
"""

from __future__ import annotations

import asyncio

from streams.group import Entry, GroupContext


class Acker:
    """Queued starts and acks of one group in this process, flushed in order, one batch at
    a time."""

    def __init__(self, ctx: GroupContext) -> None:
        self.ctx = ctx
        self._starts: dict[str, Entry] = {}
        self._acks: list[Entry] = []
        self._in_flight: set[str] = set()
        self._ready = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._lock = asyncio.Lock()

    def started(self, entry: Entry) -> None:
        """A handler starts on ``entry`` (its attempt ``entry.history.attempt``)."""
        self._starts[entry.entry_id] = entry
        self._ready.set()

    def ack(self, entry: Entry) -> None:
        """``entry``'s handler returned: ack it and remove its companion fields."""
        self._acks.append(entry)
        self._ready.set()

    async def settle(self, entry_id: str) -> None:
        """Before a script writes or deletes ``entry_id``'s marker itself: drop its queued
        start (the script writes the whole value) or wait for the batch carrying it."""
        while True:
            if self._starts.pop(entry_id, None) is not None:
                return
            if entry_id not in self._in_flight:
                return
            await self._idle.wait()

    async def run_once(self) -> None:
        """The acker loop's step: wait for work, send one batch."""
        await self._ready.wait()
        await self.flush()

    async def flush(self) -> None:
        """Send everything queued (one batch at a time); on error it stays queued."""
        async with self._lock:
            self._ready.clear()
            starts, acks = self._starts, self._acks
            self._starts, self._acks = {}, []
            if not starts and not acks:
                return
            acked = {e.entry_id for e in acks}
            marks = [e for eid, e in starts.items() if eid not in acked]
            for entry in marks:
                entry.marked = True
            # A field may exist for an entry delivered before (retry, reclaim) or marked now.
            clean = [e.entry_id for e in acks if e.deliveries > 1 or e.marked]
            ctx = self.ctx
            args: list[str | int] = [ctx.spec.group, ctx.consumer, len(marks), len(acks)]
            for entry in marks:
                args += [entry.entry_id, entry.history.started_again().encode()]
            args += [e.entry_id for e in acks]
            args += clean
            self._in_flight = {e.entry_id for e in marks}
            self._idle.clear()
            try:
                await ctx.scripts.ack(
                    keys=[ctx.keys.stream, ctx.keys.errors, ctx.keys.attempts], args=args
                )
            except BaseException:
                for entry in marks:  # try again next time (unless settled meanwhile)
                    self._starts.setdefault(entry.entry_id, entry)
                self._acks = acks + self._acks
                self._ready.set()
                raise
            finally:
                self._in_flight = set()
                self._idle.set()
