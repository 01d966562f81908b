"""Publishing events: stored in Redis before the caller goes on, or an exception.

From an HTTP handler::

    entry_id = await publisher.publish(
        names.UPLOADS, "upload.verify", {"conversation_id": cid, "chunk": n},
        idempotency_key=f"verify:{cid}:{n}", request_id=request_id,
    )

``publish`` returns only once the XADD succeeded; when Redis is down it
raises one of ``storage.redis_client.REDIS_UNAVAILABLE_ERRORS``, which the
error middleware answers with 503, so a 2xx never goes out for an event that
was not stored.

State change + event: streams live under their own hash tag
(``echo:{uploads}``), conversation state under another (``echo:{c:<uuid>}``),
so in Redis Cluster one MULTI or script cannot cover both. The pattern is
*outbox-like*: make the state change first, then publish; if the process dies
in between, the client retries the request (it got no 2xx) and the state
change is repeated idempotently; consumers dedupe on the idempotency key, so
a duplicate event is harmless. On a single node, or for keys under the
stream's own tag, :meth:`Publisher.add_to_pipeline` queues the XADD in a
caller's MULTI pipeline.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from config import Settings
from storage.redis_client import RedisClient
from streams.envelope import Envelope
from streams.names import StreamNames
from streams.scripts import Scripts


def encode_member(envelope: Envelope) -> str:
    """The delayed-set member of an event: a JSON array of its stream fields, in order."""
    flat: list[str] = []
    for key, value in envelope.fields().items():
        flat += [key, value]
    return json.dumps(flat, separators=(",", ":"))


class Publisher:
    """Adds events to streams; the length cap is only a safety valve (retention trims)."""

    def __init__(self, redis: RedisClient, names: StreamNames, *, max_len: int = 1_000_000) -> None:
        self._redis = redis
        self._names = names
        self._max_len = max_len
        self._scripts = Scripts.load(redis)

    @classmethod
    def from_settings(cls, redis: RedisClient, settings: Settings) -> Publisher:
        return cls(redis, StreamNames(settings.redis_key_prefix), max_len=settings.stream_max_len)

    @staticmethod
    def envelope(
        event_type: str,
        payload: Mapping[str, Any],
        *,
        idempotency_key: str = "",
        request_id: str = "",
        v: int = 1,
    ) -> Envelope:
        return Envelope(
            type=event_type, payload=dict(payload), idem=idempotency_key,
            request_id=request_id, v=v,
        )

    async def publish(
        self,
        stream: str,
        event_type: str,
        payload: Mapping[str, Any],
        *,
        idempotency_key: str = "",
        request_id: str = "",
        v: int = 1,
    ) -> str:
        """Store one event; return its stream entry id. Raises on failure (never silently)."""
        env = self.envelope(
            event_type, payload, idempotency_key=idempotency_key, request_id=request_id, v=v
        )
        return await self.publish_envelope(stream, env)

    async def publish_envelope(self, stream: str, envelope: Envelope) -> str:
        key = self._names.stream(stream)
        entry_id = await self._redis.xadd(
            key, envelope.fields(), maxlen=self._max_len, approximate=True  # type: ignore[arg-type]
        )
        return str(entry_id)

    async def publish_many(self, stream: str, envelopes: Iterable[Envelope]) -> list[str]:
        """Store a batch in one round trip (pipelined, not atomic); return the entry ids."""
        key = self._names.stream(stream)
        async with self._redis.pipeline(transaction=False) as pipe:
            for env in envelopes:
                pipe.xadd(key, env.fields(), maxlen=self._max_len, approximate=True)  # type: ignore[arg-type]
            return [str(i) for i in await pipe.execute()]

    async def publish_later(
        self,
        stream: str,
        event_type: str,
        payload: Mapping[str, Any],
        delay_s: float,
        *,
        idempotency_key: str = "",
        request_id: str = "",
        v: int = 1,
    ) -> str:
        """Store an event that enters ``stream`` after ``delay_s`` (server clock); return its id.

        A consumer runtime serving that stream moves it when due.
        """
        env = self.envelope(
            event_type, payload, idempotency_key=idempotency_key, request_id=request_id, v=v
        )
        keys = self._names.keys(stream)
        await self._scripts.schedule(
            keys=[keys.delayed], args=[int(delay_s * 1000), encode_member(env)]
        )
        return env.id

    def add_to_pipeline(
        self, pipe: Any, stream: str, envelope: Envelope
    ) -> None:
        """Queue the XADD of ``envelope`` in ``pipe`` (e.g. a MULTI with a state change).

        In Cluster all keys of one MULTI must share a hash tag: only keys under the
        stream's own tag qualify. Otherwise publish after the state change (see module doc).
        """
        pipe.xadd(
            self._names.stream(stream), envelope.fields(), maxlen=self._max_len, approximate=True
        )
