"""One account of the entries a consumer holds, shared by every path that takes entries.

The reader (``XREADGROUP``), the reclaim (``XAUTOCLAIM``), the own-pending pass
at start and the retry of failed entries all take entries from Redis. Each one
*reserves* room here before it awaits Redis, holds what came against that
reservation and gives the rest back when it leaves the ``with`` block. Two
paths that each measured the free room and then both awaited would each fill
it: workers of the fault-injection run held twice their bound (issue #14).

Counted against the bound: entries in hand (queued or running) and open
reservations. Entries waiting out a retry back-off are counted apart (a failing
dependency must not stop the intake of other work) and have their own cap.

Older work comes first when room is short: a due retry, then an entry stranded
by a dead worker, then a new entry (:data:`RETRY` > :data:`RECLAIM` >
:data:`INTAKE`). Room a path could not get is *owed* to it (:meth:`Capacity.owe`)
and withheld from lower ones until it gets it, so a busy reader cannot starve
the reclaim, nor new work the retries; a retry also ignores the waiting cap,
which would otherwise lock the intake out for good.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable, Iterator, Sequence

#: Who asks for room, lowest priority first.
INTAKE, RECLAIM, RETRY = 0, 1, 2


class Reservation:
    """Room reserved for entries that a Redis call in flight may bring."""

    def __init__(self, capacity: Capacity, size: int) -> None:
        self._capacity = capacity
        #: How many entries were reserved (ask Redis for no more).
        self.size = size
        self._left = size

    def hold(self, entry_id: str) -> bool:
        """Count ``entry_id`` in hand against this reservation; False once it is used up."""
        if self._capacity.is_in_hand(entry_id):
            return True
        if self._left <= 0:
            return False
        self._left -= 1
        self._capacity._hold(entry_id)
        return True

    def hold_many(self, entry_ids: Sequence[str]) -> int:
        """Count ``entry_ids``, none of them in hand yet, in hand in order while this
        reservation lasts; return how many were (the first ones)."""
        n = min(len(entry_ids), self._left)
        if n > 0:
            self._left -= n
            self._capacity._hold_many(entry_ids[:n])
        return max(0, n)

    def close(self) -> None:
        """Give back what was not used."""
        left, self._left = self._left, 0
        self._capacity._unreserve(left)


class Capacity:
    """Entries in hand plus open reservations never exceed ``bound``; no room is offered to
    the intake while ``max_waiting`` entries wait for a retry."""

    def __init__(self, bound: int, max_waiting: int) -> None:
        self.bound = bound
        self.max_waiting = max_waiting
        self._in_hand: set[str] = set()
        self._waiting: set[str] = set()
        self._reserved = 0
        self._owed = [0, 0, 0]  # by priority
        self._space = asyncio.Event()
        #: The room the intake waits for: the event is set only once there is that much, so
        #: entries let go one by one do not wake the reader for each.
        self._want = 1
        self._intake_waiting = False

    def held_count(self) -> int:
        """Entries in hand: queued for a worker or running."""
        return len(self._in_hand)

    def waiting_count(self) -> int:
        """Entries owned but waiting out a retry back-off."""
        return len(self._waiting)

    def is_in_hand(self, entry_id: str) -> bool:
        return entry_id in self._in_hand

    def is_waiting(self, entry_id: str) -> bool:
        return entry_id in self._waiting

    def available(self, priority: int = INTAKE) -> int:
        """How much room a new reservation at ``priority`` would get now."""
        if priority < RETRY and len(self._waiting) >= self.max_waiting:
            return 0
        room = self.bound - len(self._in_hand) - self._reserved
        return max(0, room - sum(self._owed[priority + 1:]))

    def owe(self, priority: int, n: int) -> None:
        """``n`` entries at ``priority`` found no room: withhold that much from lower ones."""
        less = n < self._owed[priority]
        self._owed[priority] = max(0, n)
        if less:
            self._signal()

    @contextlib.contextmanager
    def reserve(self, n: int | None = None, *, priority: int = INTAKE) -> Iterator[Reservation]:
        """Reserve room for up to ``n`` entries (all there is when None), synchronously: hold
        what arrives with ``Reservation.hold``; the rest is given back on leaving, error or not."""
        available = self.available(priority)
        size = available if n is None else max(0, min(n, available))
        self._reserved += size
        reservation = Reservation(self, size)
        try:
            yield reservation
        finally:
            reservation.close()

    async def wait_for_space(
        self, *, at_least: int = 1, starving: Callable[[], bool] | None = None
    ) -> None:
        """Return once a reservation of the intake would get ``at_least`` entries' room, or
        any room while ``starving()`` (nothing left to do meanwhile: see :meth:`nudge`)."""
        while True:
            room = self.available(INTAKE)
            if room >= at_least or (room > 0 and starving is not None and starving()):
                return
            self._want = at_least
            self._space.clear()
            self._intake_waiting = True
            try:
                await self._space.wait()
            finally:
                self._intake_waiting = False

    def nudge(self) -> None:
        """Wake a waiting intake if there is any room (its ``starving`` condition changed)."""
        if self.available(INTAKE) > 0:
            self._space.set()

    def _signal(self) -> None:
        if self._intake_waiting and self.available(INTAKE) >= self._want:
            self._space.set()

    def to_waiting(self, entry_id: str) -> None:
        """``entry_id`` failed and waits for its retry: it frees its room in hand."""
        self._in_hand.discard(entry_id)
        self._waiting.add(entry_id)
        self._signal()

    def let_go(self, entry_id: str) -> None:
        """``entry_id`` is no longer held (done, dead-lettered, deferred, lost, released)."""
        self._in_hand.discard(entry_id)
        self._waiting.discard(entry_id)
        self._signal()

    def let_go_many(self, entry_ids: Iterable[str]) -> None:
        """:meth:`let_go` of each of ``entry_ids`` (handled entries, let go once per burst)."""
        self._in_hand.difference_update(entry_ids)
        if self._waiting:
            self._waiting.difference_update(entry_ids)
        self._signal()

    def _hold_many(self, entry_ids: Sequence[str]) -> None:
        self._reserved -= len(entry_ids)
        if self._waiting:
            self._waiting.difference_update(entry_ids)
        self._in_hand.update(entry_ids)

    def _hold(self, entry_id: str) -> None:
        self._reserved -= 1
        self._waiting.discard(entry_id)
        self._in_hand.add(entry_id)

    def _unreserve(self, n: int) -> None:
        if n:
            self._reserved -= n
            self._signal()
