"""Failed entries of one group waiting out their retry back-off here, earliest due first."""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Iterable

#: (due on the monotonic clock, sequence, entry id)
Item = tuple[float, int, str]


class Backoffs:
    """A heap of entry ids by the time their back-off ends."""

    def __init__(self) -> None:
        self._heap: list[Item] = []
        self._seq = itertools.count()

    def add(self, entry_id: str, due: float) -> None:
        heapq.heappush(self._heap, (due, next(self._seq), entry_id))

    def pop_due(self, now: float, still_waiting: Callable[[str], bool]) -> list[Item]:
        """Take out the items due by ``now`` whose entry is ``still_waiting`` (the others
        were let go meanwhile), earliest first."""
        due: list[Item] = []
        while self._heap and self._heap[0][0] <= now:
            item = heapq.heappop(self._heap)
            if still_waiting(item[2]):
                due.append(item)
        return due

    def put_back(self, items: Iterable[Item]) -> None:
        """Items taken out but not retried now: they are due on the next tick."""
        for item in items:
            heapq.heappush(self._heap, item)

    def clear(self) -> None:
        self._heap.clear()
