"""Redis key names of the LLM layer, in one place.

Every key of the limiter shares the hash tag ``{llm}`` so the Lua scripts that
touch several of them run on one Cluster slot; each job's keys share
``{job:<id>}``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class LimiterKeys:
    """The keys of the cluster-wide semaphore and the shared pause."""

    #: ZSET holder id -> lease expiry (Redis server time, ms).
    holders: str
    #: ZSET waiter id -> ticket number (FIFO order).
    queue: str
    #: ZSET waiter id -> heartbeat expiry (ms); a waiter that stops polling is dropped.
    heartbeats: str
    #: Counter that hands out tickets.
    tickets: str
    #: String: Redis server time (ms) before which no call starts.
    pause_until: str

    @classmethod
    def for_prefix(cls, prefix: str, tag: str = "llm") -> LimiterKeys:
        """Keys of one bound; ``tag`` names it (``llm``, ``transcription``) and is its hash tag."""
        base = f"{prefix}:{{{tag}}}"
        return cls(
            holders=f"{base}:permits:holders",
            queue=f"{base}:permits:queue",
            heartbeats=f"{base}:permits:heartbeats",
            tickets=f"{base}:permits:tickets",
            pause_until=f"{base}:pause_until",
        )

    def all(self) -> list[str]:
        return [self.holders, self.queue, self.heartbeats, self.tickets, self.pause_until]


def job_key(prefix: str, job_id: str) -> str:
    """Hash holding one job's status and per-batch results."""
    return f"{prefix}:{{job:{job_id}}}"
