"""The event envelope: flat stream fields, readable in ``redis-cli XRANGE``.

An entry holds ``id type v created_ms idem request_id attempt payload`` where
``payload`` is one JSON object. :func:`decode` raises :class:`EnvelopeError`
for anything malformed; the consumer dead-letters such entries. Decoding is on
every consumer's hot path: orjson parses the payload (the standard library
takes over for what orjson refuses, e.g. ``NaN``, and reads again a payload
with a float, which may be an integer past 64 bits that orjson reads as a
float; so what decodes is unchanged) and the frozen instance is built through its slots.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field, replace
from typing import Any

import orjson


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


def _has_float(value: Any) -> bool:
    stack = [value]
    while stack:
        item = stack.pop()
        kind = type(item)
        if kind is dict:
            stack.extend(item.values())
        elif kind is list:
            stack.extend(item)
        elif kind is float:
            return True
    return False


def _loads(text: str) -> Any:
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)
    # orjson reads an integer past 64 bits as a float: any float is read again exactly.
    return json.loads(text) if _has_float(value) else value


#: The slot setters of Envelope: a frozen dataclass's ``__init__`` sets each field through
#: ``object.__setattr__``, twice the cost of these on the consumer's hot path.
(_SET_TYPE, _SET_PAYLOAD, _SET_ID, _SET_V, _SET_CREATED_MS, _SET_IDEM, _SET_REQUEST_ID,
 _SET_ATTEMPT) = (getattr(Envelope, name).__set__ for name in (
    "type", "payload", "id", "v", "created_ms", "idem", "request_id", "attempt"))


def decode(fields: dict[str, str]) -> Envelope:
    try:
        payload = _loads(fields["payload"])
        if not isinstance(payload, dict):
            raise EnvelopeError("payload is not a JSON object")
        envelope_id = fields["id"]
        envelope = object.__new__(Envelope)
        _SET_TYPE(envelope, fields["type"])
        _SET_PAYLOAD(envelope, payload)
        _SET_ID(envelope, envelope_id)
        _SET_V(envelope, int(fields["v"]))
        _SET_CREATED_MS(envelope, int(fields["created_ms"]))
        _SET_IDEM(envelope, fields.get("idem") or envelope_id)
        _SET_REQUEST_ID(envelope, fields.get("request_id", ""))
        _SET_ATTEMPT(envelope, int(fields.get("attempt", "0")))
        return envelope
    except KeyError as exc:
        raise EnvelopeError(f"missing field {exc.args[0]!r}") from None
    except (ValueError, TypeError) as exc:
        if isinstance(exc, EnvelopeError):
            raise
        raise EnvelopeError(f"malformed field: {exc}") from None
