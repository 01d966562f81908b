"""Started attempts of an entry, told apart from raw deliveries, and the dead-letter reasons.

Redis counts a delivery on every read or claim, also of an entry a worker took
and never started (it died with the entry queued). Counting those as failures
dead-lettered good events under churn (issue #14), so the runtime records each
handler *start* in the stream's ``attempts`` hash (field ``<group>:<entry id>``,
value ``"<started> <failures> <last failed attempt>"``, readable in redis-cli)
and applies ``max_deliveries`` to started attempts. An entry that kills its
worker before its start is recorded would then circulate for ever, so raw
deliveries keep a hard cap of :data:`RAW_DELIVERY_FACTOR` x ``max_deliveries``.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Raw deliveries (reads and claims, started or not) allowed per ``max_deliveries``.
RAW_DELIVERY_FACTOR = 3


@dataclass(frozen=True, slots=True)
class History:
    """What the ``attempts`` hash says of one entry's earlier runs in one group."""

    #: Handler starts recorded.
    started: int = 0
    #: Of those, how many ended in a recorded handler failure.
    failures: int = 0
    #: The attempt number (1-based) of the last recorded failure; 0 if none.
    last_failed: int = 0

    @classmethod
    def parse(cls, value: object) -> History:
        """The history in a marker value; a missing or unreadable one is "never started"."""
        if not value:
            return cls()
        text = value.decode() if isinstance(value, bytes) else str(value)
        try:
            started, failures, last_failed = (int(part) for part in text.split())
        except ValueError:
            return cls()
        return cls(max(0, started), max(0, failures), max(0, last_failed))

    def encode(self) -> str:
        return f"{self.started} {self.failures} {self.last_failed}"

    @property
    def attempt(self) -> int:
        """The number of the next attempt (1 on the first run)."""
        return self.started + 1

    @property
    def last_crashed(self) -> bool:
        """The last started attempt ended without a recorded failure: its worker stopped."""
        return self.started > self.last_failed

    def started_again(self) -> History:
        return History(self.started + 1, self.failures, self.last_failed)

    def failed(self) -> History:
        """This history after the current attempt (``started``, counted already) failed."""
        return History(self.started, self.failures + 1, self.started)


def raw_cap(max_deliveries: int) -> int:
    """The most raw deliveries an entry may have before it is dead-lettered unconditionally."""
    return RAW_DELIVERY_FACTOR * max_deliveries


def failed_reason(history: History, error: str) -> str:
    """Why an entry whose handler just failed its last allowed attempt is dead-lettered.

    ``history`` includes that failure.
    """
    n, failures = history.started, history.failures
    times = f"{failures} times" if failures == n else f"{failures} times in {n} attempts"
    return f"handler failed {times}: {error}"


def exhausted_reason(history: History) -> tuple[str, bool]:
    """Why an entry taken with no attempt left is dead-lettered, and whether the last
    recorded handler error should follow the reason (the caller's script appends it)."""
    if history.last_crashed:
        n, crashes = history.started, history.started - history.failures
        where = f"{n} attempts" if crashes == n else f"{crashes} of {n} attempts"
        return f"worker stopped mid-way in {where} (reclaimed after a crash)", False
    return failed_reason(history, ""), True


def uncounted_reason(deliveries: int, history: History) -> str:
    """Why an entry delivered past the raw cap without enough recorded starts is dead-lettered."""
    if history.started == 0:
        return (f"delivered {deliveries} times without a recorded start "
                "(the worker died before starting it)")
    return (f"delivered {deliveries} times but started only {history.started} times "
            "(the workers died before starting it)")
