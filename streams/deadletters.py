"""Operating on dead letters: list them a page at a time, replay one, drop one.

A dead letter is an entry of ``S:dead`` (written by ``lua/deadletter.lua``): the
original entry's fields (the event envelope) beside ``dead_stream``, ``dead_id``
(the original entry id), ``dead_group``, ``dead_reason``, ``dead_last_error``,
``dead_deliveries``, ``dead_attempts`` and ``dead_ms``.

**Replay** (``lua/replay.lua``) adds the event to its stream as a new entry and
deletes the letter in one script: the stream and its dead letters share a hash
tag, so this holds on Cluster too. Exactly once, both ways:

* the new entry is a fresh run for the consumer: a new entry id, so no started
  attempts, deliveries or recorded error carry over, and the deferral count
  (``attempt``) starts again from 0. The event keeps its ``id``, its
  idempotency key and its payload: a handler that dedupes on the key sees the
  same key, and since the dead-lettered run never succeeded (a failed handler
  records no effect) the replay is handled, not taken for a duplicate;
* the letter goes in the same script, so a second replay (or two operators at
  once) finds nothing and re-publishes nothing.

Every group of the stream receives the replayed entry, not only the group that
dead-lettered it (``dead_group``); the other groups had handled the event already
and dedupe on its idempotency key.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from typing import Any

from streams.names import StreamNames
from streams.redis_types import RedisClient
from streams.scripts import lua_source

#: A stream entry id as Redis writes it (``<ms>-<seq>``); anything else names no letter.
ENTRY_ID = re.compile(r"^\d{1,20}-\d{1,20}$")
#: Most dead letters in one page.
MAX_PAGE = 500
#: Read once: an admin request builds a DeadLetters, and most never replay.
REPLAY_LUA = lua_source("replay")


class DeadLetterNotReplayable(Exception):
    """The letter holds no event (its entry was already gone when it was dead-lettered)."""


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One dead letter, as operators see it."""

    #: The letter's own id in ``S:dead`` (what replay and drop take).
    id: str
    #: The stream's logical name.
    stream: str
    #: The entry id the event had in its stream when it was dead-lettered.
    original_id: str
    group: str
    reason: str
    last_error: str
    #: Raw deliveries (reads and claims) and started handler attempts of the dead run.
    deliveries: int
    attempts: int
    dead_at_ms: int
    #: The event: its type, id, idempotency key, deferral count and payload (as stored).
    type: str
    event_id: str
    idempotency_key: str
    payload: Any

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class DeadLetterPage:
    letters: list[DeadLetter]
    #: Pass as ``after`` for the next page; ``None`` when this page is the last.
    next_after: str | None


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _int(value: str) -> int:
    try:
        return int(value)
    except ValueError:
        return 0


def _payload(raw: str) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def _letter(stream: str, letter_id: object, raw: object) -> DeadLetter:
    fields = {_text(k): _text(v) for k, v in dict(raw or {}).items()}  # type: ignore[call-overload]
    return DeadLetter(
        id=_text(letter_id),
        stream=stream,
        original_id=fields.get("dead_id", ""),
        group=fields.get("dead_group", ""),
        reason=fields.get("dead_reason", ""),
        last_error=fields.get("dead_last_error", ""),
        deliveries=_int(fields.get("dead_deliveries", "0")),
        attempts=_int(fields.get("dead_attempts", "0")),
        dead_at_ms=_int(fields.get("dead_ms", "0")),
        type=fields.get("type", ""),
        event_id=fields.get("id", ""),
        idempotency_key=fields.get("idem", ""),
        payload=_payload(fields["payload"]) if "payload" in fields else None,
    )


def is_entry_id(value: str) -> bool:
    return bool(ENTRY_ID.match(value))


class DeadLetters:
    """The dead letters of any stream under ``names``; the caller validates stream names."""

    def __init__(self, redis: RedisClient, names: StreamNames, *, max_len: int = 1_000_000):
        self._redis = redis
        self._names = names
        self._max_len = max_len
        self._replay = redis.register_script(REPLAY_LUA)

    async def list(self, stream: str, *, after: str = "", count: int = 50) -> DeadLetterPage:
        """Up to ``count`` letters of ``stream``, oldest first, after the letter id ``after``
        (exclusive; "" = from the start). Raises ValueError for a bad cursor or count."""
        if after and not is_entry_id(after):
            raise ValueError(f"after must be a dead-letter id like 1700000000000-0, not {after!r}")
        if not 1 <= count <= MAX_PAGE:
            raise ValueError(f"count must be 1 to {MAX_PAGE}")
        # One more than asked tells whether another page exists.
        raw = await self._redis.xrange(
            self._names.keys(stream).dead, min=f"({after}" if after else "-", max="+",
            count=count + 1,
        ) or []
        letters = [_letter(stream, letter_id, fields) for letter_id, fields in raw[:count]]
        more = len(raw) > count
        return DeadLetterPage(letters, letters[-1].id if more and letters else None)

    async def get(self, stream: str, letter_id: str) -> DeadLetter | None:
        if not is_entry_id(letter_id):
            return None
        raw = await self._redis.xrange(self._names.keys(stream).dead, letter_id, letter_id) or []
        return _letter(stream, raw[0][0], raw[0][1]) if raw else None

    async def replay(self, stream: str, letter_id: str) -> str | None:
        """Re-publish the letter's event to ``stream`` and delete the letter, atomically.

        Returns the new entry id, or None if there is no such letter (already replayed or
        dropped). Raises :class:`DeadLetterNotReplayable` for a letter without an event.
        """
        if not is_entry_id(letter_id):
            return None
        keys = self._names.keys(stream)
        result = await self._replay(keys=[keys.stream, keys.dead],
                                    args=[letter_id, self._max_len])
        if result == 0:
            return None
        if result == -1:
            raise DeadLetterNotReplayable(f"dead letter {letter_id} of {stream} holds no event")
        return _text(result)

    async def drop(self, stream: str, letter_id: str) -> bool:
        """Delete one letter; False if there was none."""
        if not is_entry_id(letter_id):
            return False
        return bool(await self._redis.xdel(self._names.keys(stream).dead, letter_id))
