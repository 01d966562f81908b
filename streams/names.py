"""Every stream, group and key name of the event pipeline, from one prefix.

Layout (prefix ``echo``), one hash tag per stream so that a stream and its
companions always live in one Cluster slot::

    echo:{uploads}            the stream (groups hang off it)
    echo:{uploads}:dead       its dead letters
    echo:{uploads}:delayed    sorted set of deferred entries, score = due time (ms)
    echo:{uploads}:errors     hash entry id -> last handler error (while pending)

Why per-stream tags rather than one tag for everything: the dead-letter move
(XACK on the stream + XADD to the dead letters), a deferral (XACK + ZADD) and
the delayed mover (ZREM + XADD) each touch one stream and its companions
only, so they must share a slot, and nothing ever needs two streams at once.
Separate tags let Cluster spread the streams over nodes.
"""

from __future__ import annotations

from dataclasses import dataclass

# The catalogue: logical stream names and the consumer groups reading them.
UPLOADS = "uploads"
TRANSCRIPTION = "transcription"
LLM = "llm"
STREAMS: tuple[str, ...] = (UPLOADS, TRANSCRIPTION, LLM)

UPLOAD_CONFIRMATION_GROUP = "upload-confirmation"
TRANSCRIPTION_GROUP = "transcription"
LLM_GROUP = "llm"


@dataclass(frozen=True, slots=True)
class StreamKeys:
    """The Redis keys of one logical stream."""

    name: str
    stream: str
    dead: str
    delayed: str
    errors: str


@dataclass(frozen=True, slots=True)
class StreamNames:
    """Key names under ``prefix`` (``settings.redis_key_prefix``)."""

    prefix: str = "echo"

    def keys(self, name: str) -> StreamKeys:
        if not name or any(c in name for c in "{} \t"):
            raise ValueError(f"bad stream name {name!r}")
        base = f"{self.prefix}:{{{name}}}"
        return StreamKeys(
            name=name,
            stream=base,
            dead=f"{base}:dead",
            delayed=f"{base}:delayed",
            errors=f"{base}:errors",
        )

    def stream(self, name: str) -> str:
        return self.keys(name).stream

    def catalogue(self) -> list[StreamKeys]:
        return [self.keys(name) for name in STREAMS]

    @staticmethod
    def error_field(group: str, entry_id: str) -> str:
        """Field of the stream's ``errors`` hash holding an entry's last handler error."""
        return f"{group}:{entry_id}"

    def done_marker(self, tag: str, scope: str, idempotency_key: str) -> str:
        """Key of an idempotency marker under a handler-chosen hash tag, e.g. ``c:<uuid>``."""
        return f"{self.prefix}:{{{tag}}}:done:{scope}:{idempotency_key}"
