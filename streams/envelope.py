"""The event envelope: flat stream fields, readable in ``redis-cli XRANGE``.

An entry holds ``id type v created_ms idem request_id attempt payload`` where
``payload`` is one JSON object. :func:`decode` raises :class:`EnvelopeError`
for anything malformed; the consumer dead-letters such entries.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field, replace
from typing import Any


class EnvelopeError(ValueError):
    """A stream entry is not a valid event (missing field, bad JSON, unknown type...)."""


@dataclass(frozen=True, slots=True)
class Envelope:
    type: str
    payload: dict[str, Any]
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    v: int = 1
    created_ms: int = field(default_factory=lambda: int(time.time() * 1000))
    #: Stable across redeliveries and deferrals; handlers dedupe their effects on it.
    idem: str = ""
    request_id: str = ""
    #: How many times the event was deferred (``Defer``); not the delivery count.
    attempt: int = 0

    def __post_init__(self) -> None:
        if not self.idem:
            object.__setattr__(self, "idem", self.id)

    def fields(self) -> dict[str, str]:
        return {
            "id": self.id,
            "type": self.type,
            "v": str(self.v),
            "created_ms": str(self.created_ms),
            "idem": self.idem,
            "request_id": self.request_id,
            "attempt": str(self.attempt),
            "payload": json.dumps(self.payload, separators=(",", ":"), sort_keys=True),
        }

    def next_attempt(self, payload_update: dict[str, Any] | None = None) -> Envelope:
        payload = {**self.payload, **(payload_update or {})}
        return replace(self, attempt=self.attempt + 1, payload=payload)


def encode_member(envelope: Envelope) -> str:
    """The delayed-set member of an event: a JSON array of its stream fields, in order."""
    flat: list[str] = []
    for key, value in envelope.fields().items():
        flat += [key, value]
    return json.dumps(flat, separators=(",", ":"))


def decode(fields: dict[str, str]) -> Envelope:
    try:
        payload = json.loads(fields["payload"])
        if not isinstance(payload, dict):
            raise EnvelopeError("payload is not a JSON object")
        return Envelope(
            id=fields["id"],
            type=fields["type"],
            v=int(fields["v"]),
            created_ms=int(fields["created_ms"]),
            idem=fields.get("idem", ""),
            request_id=fields.get("request_id", ""),
            attempt=int(fields.get("attempt", "0")),
            payload=payload,
        )
    except KeyError as exc:
        raise EnvelopeError(f"missing field {exc.args[0]!r}") from None
    except (ValueError, TypeError) as exc:
        if isinstance(exc, EnvelopeError):
            raise
        raise EnvelopeError(f"malformed field: {exc}") from None
