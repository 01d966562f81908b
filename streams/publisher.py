"""Publishing events: stored in Redis before the caller goes on, or an exception.

From an HTTP handler::

    entry_id = await publisher.publish(
        "orders", "order.placed", {"order_id": oid},
        idempotency_key=f"placed:{oid}", request_id=request_id,
    )

``publish`` returns only once the XADD succeeded; when Redis is down it
raises one of :data:`streams.redis_types.REDIS_UNAVAILABLE_ERRORS`, which an
HTTP layer can answer with 503, so a 2xx never goes out for an event that was
not stored.

State change + event: a stream lives under its own hash tag
(``echo:{orders}``), the application's state under others (``echo:{o:<id>}``),
so in Redis Cluster one MULTI or script cannot cover both. The pattern is
*outbox-like*: make the state change first, then publish; if the process dies
in between, the client retries the request (it got no 2xx) and the state
change is repeated idempotently; consumers dedupe on the idempotency key, so
a duplicate event is harmless.
"""

from __future__ import annotations

from collections.abc import Awaitable, Iterable, Mapping
from typing import Any, Protocol

from streams.config import StreamsConfig
from streams.envelope import Envelope
from streams.names import StreamNames
from streams.redis_types import RedisClient


class CommandExecutor(Protocol):
    """Sends one Redis command (``"XADD", key, ...``) and resolves to its decoded reply.

    The application may hand the publisher one that pipelines the commands of
    many concurrent callers into one write (the gateway's auto-pipelined
    connection); each caller still awaits its own reply, so durability is that
    of a plain XADD."""

    def __call__(self, *args: str | int) -> Awaitable[Any]: ...


class Publisher:
    """Adds events to streams; the length cap is only a safety valve (retention trims).

    ``execute``, when given, carries single publishes (XADD) instead of the pooled
    client: concurrent publishers then share round trips. Batches
    (:meth:`publish_many`) stay on the pooled client's pipeline."""

    def __init__(
        self, redis: RedisClient, names: StreamNames, *, max_len: int = 1_000_000,
        execute: CommandExecutor | None = None,
    ) -> None:
        self._redis = redis
        self._names = names
        self._max_len = max_len
        self._execute = execute
        self._max_len_args: tuple[str, str, int, str] = ("MAXLEN", "~", max_len, "*")

    @classmethod
    def from_config(
        cls, redis: RedisClient, config: StreamsConfig, *, execute: CommandExecutor | None = None
    ) -> Publisher:
        return cls(redis, StreamNames(config.key_prefix), max_len=config.max_len, execute=execute)

    async def publish(
        self,
        stream: str,
        event_type: str,
        payload: Mapping[str, Any],
        *,
        idempotency_key: str = "",
        request_id: str = "",
    ) -> str:
        """Store one event; return its stream entry id. Raises on failure (never silently)."""
        env = Envelope(
            type=event_type, payload=dict(payload), idem=idempotency_key, request_id=request_id
        )
        return await self.publish_envelope(stream, env)

    async def publish_envelope(self, stream: str, envelope: Envelope) -> str:
        key = self._names.stream(stream)
        if self._execute is not None:
            flat: list[str] = []
            for name, value in envelope.fields().items():
                flat += (name, value)
            return str(await self._execute("XADD", key, *self._max_len_args, *flat))
        entry_id = await self._redis.xadd(
            key, envelope.fields(), maxlen=self._max_len, approximate=True  # type: ignore[arg-type]
        )
        return str(entry_id)

    async def publish_many(self, stream: str, envelopes: Iterable[Envelope]) -> list[str]:
        """Store a batch in one round trip (pipelined, not atomic); return the entry ids."""
        key = self._names.stream(stream)
        async with self._redis.pipeline(transaction=False) as pipe:
            for env in envelopes:
                pipe.xadd(
                    key, env.fields(), maxlen=self._max_len, approximate=True  # type: ignore[arg-type]
                )
            return [str(i) for i in await pipe.execute()]
