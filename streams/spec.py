"""What a consumer group declares (:class:`GroupSpec`) and what its handler receives.

A handler is ``async def handle(ctx: EventContext) -> None``. Returning acks
the entry; raising retries it with back-off (by attempt) and past
``max_deliveries`` started attempts moves it to the dead letters (an entry a
worker took but died before starting is no attempt); raising :class:`Defer` (or
calling ``ctx.defer(...)``) acks it and re-publishes it after a delay, which
is not a failure. Handlers must be idempotent: an entry is redelivered when a
worker dies between its effect and its ack; dedupe on ``ctx.idempotency_key``.

Example, built by the application and handed to the runtime::

    GroupSpec(
        stream="orders", group="billing",
        handler=bill_order,
        event_types={"order.placed": OrderPlaced.from_payload},
        concurrency=4, lease_s=30, max_deliveries=5,
    )
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from streams.envelope import Envelope
from streams.names import StreamNames


class Defer(Exception):
    """Raise from a handler to run the event again in ``delay_s`` seconds.

    The entry is acked and the next attempt scheduled in one atomic step; the
    event keeps its id and idempotency key, ``attempt`` goes up by one and
    ``payload_update`` is merged into the payload. It does not count towards
    ``max_deliveries``; bound your own window with ``ctx.attempt``.
    """

    def __init__(self, delay_s: float, payload_update: Mapping[str, Any] | None = None) -> None:
        super().__init__(f"deferred by {delay_s}s")
        self.delay_s = delay_s
        self.payload_update = dict(payload_update or {})


#: Turns a payload dict into the handler's typed value; raises ValueError/TypeError/KeyError.
PayloadParser = Callable[[dict[str, Any]], Any]


def _identity(payload: dict[str, Any]) -> Any:
    return payload


@dataclass(frozen=True, slots=True)
class EventContext:
    """One delivery of one event to a handler."""

    stream: str
    group: str
    entry_id: str
    envelope: Envelope
    #: The payload parsed by the group's parser for this event type.
    payload: Any
    #: Raw delivery count: 1 on the first delivery; grows with each retry or reclaim (not
    #: with deferral), also when a worker took the entry but died before starting it.
    deliveries: int
    names: StreamNames
    #: How many times a handler was started on this entry in this group, this run included
    #: (1 on the first run). Entries taken but never started do not count; ``max_deliveries``
    #: applies to this. Use it, not ``deliveries``, to bound your own attempts.
    attempts: int = 1
    #: The previous started attempt ended with no recorded handler failure: its worker
    #: stopped mid-way (killed, or cut off at shutdown) and the entry was reclaimed.
    reclaimed_after_crash: bool = False

    @property
    def type(self) -> str:
        return self.envelope.type

    @property
    def idempotency_key(self) -> str:
        return self.envelope.idem

    @property
    def attempt(self) -> int:
        """How many times this event was deferred before."""
        return self.envelope.attempt

    async def last_error(self, redis: Any) -> str:
        """The error the runtime recorded for this entry's last failed delivery ("" if none);
        kept in the stream's ``errors`` hash while the entry is pending."""
        value = await redis.hget(
            self.names.keys(self.stream).errors, self.names.error_field(self.group, self.entry_id)
        )
        return str(value) if value else ""

    def defer(self, delay_s: float, payload_update: Mapping[str, Any] | None = None) -> None:
        """Stop here and run this event again in ``delay_s`` (raises :class:`Defer`)."""
        raise Defer(delay_s, payload_update)


(_SET_STREAM, _SET_GROUP, _SET_ENTRY_ID, _SET_ENVELOPE, _SET_PAYLOAD, _SET_DELIVERIES,
 _SET_NAMES, _SET_ATTEMPTS, _SET_RECLAIMED) = (getattr(EventContext, name).__set__ for name in (
    "stream", "group", "entry_id", "envelope", "payload", "deliveries", "names", "attempts",
    "reclaimed_after_crash"))


def event_context(
    stream: str, group: str, entry_id: str, envelope: Envelope, payload: Any, deliveries: int,
    names: StreamNames, attempts: int, reclaimed_after_crash: bool,
) -> EventContext:
    """``EventContext(...)`` at half the cost, for the consumer's hot path: a frozen
    dataclass's ``__init__`` sets each field through ``object.__setattr__``."""
    event = object.__new__(EventContext)
    _SET_STREAM(event, stream)
    _SET_GROUP(event, group)
    _SET_ENTRY_ID(event, entry_id)
    _SET_ENVELOPE(event, envelope)
    _SET_PAYLOAD(event, payload)
    _SET_DELIVERIES(event, deliveries)
    _SET_NAMES(event, names)
    _SET_ATTEMPTS(event, attempts)
    _SET_RECLAIMED(event, reclaimed_after_crash)
    return event


Handler = Callable[[EventContext], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class GroupSpec:
    """One consumer group: which stream, which handler, how much at once, how patient.

    ``None`` means "from :class:`~streams.config.StreamsConfig`" (``concurrency``,
    ``prefetch``, ``lease_s``, ``max_deliveries``). ``prefetch`` entries may wait in
    memory, leased and renewed, beside the ``concurrency`` running: small for slow
    handlers (work stays spread over processes), large for fast ones (fewer reads).
    """

    stream: str
    group: str
    handler: Handler
    #: Accepted event types and their payload parsers; other types go to the dead letters.
    #: Empty accepts every type with the raw payload dict.
    event_types: Mapping[str, PayloadParser] = field(default_factory=dict)
    concurrency: int | None = None
    prefetch: int | None = None
    lease_s: float | None = None
    max_deliveries: int | None = None
    retry_base_s: float = 0.5
    retry_max_s: float = 30.0

    def parser_for(self, event_type: str) -> PayloadParser | None:
        if not self.event_types:
            return _identity
        return self.event_types.get(event_type)

    def retry_delay_s(self, deliveries: int) -> float:
        """Back-off before the next attempt after ``deliveries`` failed ones (the runtime
        passes started attempts)."""
        return float(min(self.retry_max_s, self.retry_base_s * 2 ** max(0, deliveries - 1)))
