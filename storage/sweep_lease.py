"""The stuck-work sweep's lease, fencing token, cursor and run log: the owner of ``{recovery}``.

One sweep runs at a time across the cluster, once per interval:

* ``P:{recovery}:lease``  string  the fencing token of the sweep running now, with a TTL
  (the lease): a sweeper that dies stops renewing it, and it expires;
* ``P:{recovery}:fence``  string  counter: each acquisition takes the next token;
* ``P:{recovery}:state``  hash    ``last_started_ms`` (Redis time; a run is due
  ``interval`` after it), ``last_success_ms``, ``token``, ``owner``, the walk's cursor
  (``cursor_project``, ``cursor_conversation``) and the last run's figures;
* ``P:{recovery}:runs``   list    the last runs, newest first (JSON records).

Every write the sweep makes to this state is a Lua script that checks the token first
(``sweep_write.lua``, ``sweep_finish.lua``): a sweep whose lease expired (a long pause)
and was taken by another cannot move the cursor back or record a run it did not finish.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, cast

from storage.ratelimit import load_lua
from storage.redis_client import RedisClient

#: Runs kept in the run log.
RUNS_KEPT = 50


@dataclass(frozen=True, slots=True)
class LeaseGrant:
    """What :meth:`SweepLease.acquire` answered."""

    #: ``acquired``, ``held`` (another sweep runs) or ``not_due`` (the interval has not passed).
    outcome: str
    token: str = ""
    cursor_project: int = 0
    cursor_conversation: int = 0
    started_ms: int = 0
    due_in_ms: int = 0


class SweepLease:
    """The sweep lock and state under ``<prefix>:{recovery}``."""

    def __init__(self, redis: RedisClient, *, key_prefix: str = "echo") -> None:
        self.redis = redis
        base = f"{key_prefix}:{{recovery}}"
        self.lease_key = f"{base}:lease"
        self.fence_key = f"{base}:fence"
        self.state_key = f"{base}:state"
        self.runs_key = f"{base}:runs"
        self._acquire = redis.register_script(load_lua("sweep_acquire.lua"))
        self._write = redis.register_script(load_lua("sweep_write.lua"))
        self._finish = redis.register_script(load_lua("sweep_finish.lua"))

    async def acquire(self, owner: str, *, lease_s: float, interval_s: float) -> LeaseGrant:
        """Take the lease if free and a run is due (``interval_s`` 0: due now)."""
        reply = await self._acquire(
            keys=[self.lease_key, self.fence_key, self.state_key],
            args=[owner, int(lease_s * 1000), int(interval_s * 1000)],
        )
        outcome = str(reply[0])
        if outcome == "acquired":
            return LeaseGrant(outcome, token=str(reply[1]), cursor_project=int(reply[2]),
                              cursor_conversation=int(reply[3]), started_ms=int(reply[4]))
        if outcome == "not_due":
            return LeaseGrant(outcome, due_in_ms=int(reply[1]))
        return LeaseGrant(outcome, token=str(reply[1]))

    async def write(self, token: str, *, lease_s: float, fields: dict[str, Any]) -> bool:
        """Write ``fields`` to the state and renew the lease; False when fenced out."""
        args: list[Any] = [token, int(lease_s * 1000)]
        for name, value in fields.items():
            args += [name, str(value)]
        return bool(int(await self._write(keys=[self.lease_key, self.state_key], args=args)))

    async def finish(self, token: str, record: dict[str, Any], fields: dict[str, Any]) -> int | None:
        """Log the run, write ``fields``, free the lease; the finish time (ms), or None when
        fenced out."""
        args: list[Any] = [token, json.dumps(record), RUNS_KEPT]
        for name, value in fields.items():
            args += [name, str(value)]
        reply = await self._finish(
            keys=[self.lease_key, self.state_key, self.runs_key], args=args
        )
        return int(reply[1]) if int(reply[0]) else None

    async def state(self) -> dict[str, str]:
        return cast(dict[str, str], await self.redis.hgetall(self.state_key))

    async def runs(self, count: int = 10) -> list[dict[str, Any]]:
        """The last ``count`` runs, newest first."""
        raw = cast(list[str], await self.redis.lrange(self.runs_key, 0, count - 1))
        return [json.loads(item) for item in raw]
