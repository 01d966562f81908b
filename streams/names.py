"""Every key name of a stream and its companions, from one prefix.

Layout (prefix ``echo``, stream ``orders``), one hash tag per stream so that a
stream and its companions always live in one Cluster slot::

    echo:{orders}            the stream (groups hang off it)
    echo:{orders}:dead       its dead letters
    echo:{orders}:delayed    sorted set of deferred entries, score = due time (ms)
    echo:{orders}:errors     hash <group>:<entry id> -> last handler error (while pending)
    echo:{orders}:attempts   hash <group>:<entry id> -> started attempts (while pending;
                             see :mod:`streams.attempts`)

Why per-stream tags rather than one tag for everything: the dead-letter move
(XACK on the stream + XADD to the dead letters), a deferral (XACK + ZADD) and
the delayed mover (ZREM + XADD) each touch one stream and its companions
only, so they must share a slot, and nothing ever needs two streams at once.
Separate tags let Cluster spread the streams over nodes.

Which streams exist is the application's business: it passes their logical
names in (the core keeps no catalogue).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class StreamKeys:
    """The Redis keys of one logical stream."""

    name: str
    stream: str
    dead: str
    delayed: str
    errors: str
    attempts: str


@dataclass(frozen=True, slots=True)
class StreamNames:
    """Key names under ``prefix`` (``StreamsConfig.key_prefix``)."""

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
            attempts=f"{base}:attempts",
        )

    def stream(self, name: str) -> str:
        return self.keys(name).stream

    def catalogue(self, streams: Iterable[str]) -> list[StreamKeys]:
        """The keys of each of ``streams`` (logical names), in order."""
        return [self.keys(name) for name in streams]

    @staticmethod
    def error_field(group: str, entry_id: str) -> str:
        """Field of the stream's ``errors`` hash holding an entry's last handler error, and of
        its ``attempts`` hash holding its started attempts. The Lua scripts that claim
        entries build the same ``<group>:<entry id>``."""
        return f"{group}:{entry_id}"
