"""A distributed sliding-window rate limiter: exact across every process, one round trip.

Semantics: at most ``limit`` grants in *any* window of ``window_s`` seconds
for one key (a sliding log, not fixed buckets, so no burst of 2x at a bucket
boundary). The log is a sorted set of grant times per key in Redis, changed by
one Lua script that reads Redis ``TIME`` (no client clocks), drops grants that
left the window, and adds a grant only when there is room: a refused attempt
consumes nothing. The key expires one window after its last grant, so idle
keys cost nothing and a gateway restart changes nothing.

Each limited key has its own hash tag (``<prefix>:{rl:<name>:<key>}``), so
the limiter works unchanged on Redis Cluster; ``key_fn`` may instead place
the key under another tag so that a script of that slot embeds the check
(get-upload-url keeps its limit beside the conversation, and checks the
conversation, takes the grant and issues the chunk in one script). There is deliberately no
process-local fallback: if Redis is down the call raises and the HTTP layer
answers 503, rather than letting every process grant the full limit.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from storage.redis_autopipeline import AutoPipeline, run_script
from storage.redis_client import RedisClient, lua_source


def load_lua(name: str) -> str:
    """The text of ``storage/lua/<name>``."""
    return lua_source(__file__, name)


class RateLimitDecision(NamedTuple):
    """The outcome of one check, with what the response headers need (a named tuple: made
    on every request, and cheaper to make than a frozen dataclass)."""

    allowed: bool
    limit: int
    remaining: int
    window_s: int
    #: Seconds until the oldest grant in the window leaves it (0: the log is empty).
    reset_s: float
    #: Seconds until a grant is possible again (0 when allowed).
    retry_after_s: float
    policy: str = "default"

    @property
    def retry_after_header(self) -> int:
        """``Retry-After`` in whole seconds, rounded up (never 0 for a refusal)."""
        return max(1, math.ceil(self.retry_after_s)) if not self.allowed else 0

    def headers(self) -> dict[str, str]:
        """``RateLimit-Policy`` and ``RateLimit`` (IETF httpapi draft), plus ``Retry-After``."""
        reset = max(0, math.ceil(self.reset_s))
        headers = {
            "RateLimit-Policy": f'"{self.policy}";q={self.limit};w={self.window_s}',
            "RateLimit": f'"{self.policy}";r={self.remaining};t={reset}',
        }
        if not self.allowed:
            headers["Retry-After"] = str(self.retry_after_header)
        return headers


class RateLimitMetrics(Collector):
    """``echo_ratelimit_decisions_total`` by limiter and outcome (granted or refused); one
    per registry. Plain counters (see ``gateway.metrics.HttpMetrics``): counted on every
    request, from the event loop's thread only."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._counts: dict[tuple[str, str], int] = {}
        registry.register(self)

    def count(self, limiter: str, allowed: bool) -> None:
        key = (limiter, "granted" if allowed else "refused")
        self._counts[key] = self._counts.get(key, 0) + 1

    def collect(self) -> Iterator[CounterMetricFamily]:
        decisions = CounterMetricFamily(
            "echo_ratelimit_decisions",
            "Rate-limit checks by limiter and outcome (granted or refused)",
            labels=["limiter", "outcome"],
        )
        for (limiter, outcome), value in list(self._counts.items()):
            decisions.add_metric([limiter, outcome], value)
        yield decisions


class SlidingWindowLimiter:
    """``await limiter.hit(key)`` grants or refuses one unit for ``key``."""

    def __init__(
        self,
        redis: RedisClient,
        *,
        name: str,
        limit: int,
        window_s: int,
        key_prefix: str = "echo",
        metrics: RateLimitMetrics | None = None,
        key_fn: Callable[[str], str] | None = None,
        autopipeline: AutoPipeline | None = None,
    ) -> None:
        if limit < 1 or window_s < 1:
            raise ValueError("limit and window_s must be at least 1")
        if any(c in name for c in "{}:"):
            raise ValueError("a limiter name has no braces or colons")
        self.name = name
        self.limit = limit
        self.window_s = window_s
        self._prefix = key_prefix
        self._metrics = metrics
        self._key_fn = key_fn
        #: When given, checks go over it (one write per loop round) rather than the pool.
        self._autopipeline = autopipeline
        self._script: Any = redis.register_script(
            load_lua("_sliding_window_fn.lua") + load_lua("sliding_window.lua")
        )

    def key(self, subject: str) -> str:
        """The sorted set of ``subject``: its own hash tag, unless ``key_fn`` places it."""
        if any(c in subject for c in "{}"):
            raise ValueError("a rate-limit subject has no braces")
        if self._key_fn is not None:
            return self._key_fn(subject)
        return f"{self._prefix}:{{rl:{self.name}:{subject}}}"

    def script_args(self) -> list[Any]:
        """``limit, window_us, member suffix``: the arguments of ``sliding_window()`` in Lua."""
        return [self.limit, self.window_s * 1_000_000, secrets.token_hex(6)]

    def decision(self, allowed: Any, remaining: Any, reset_us: Any, retry_us: Any) -> RateLimitDecision:
        """Turn the Lua reply into a decision (and count it); for scripts that embed the limiter."""
        decision = RateLimitDecision(
            allowed=bool(int(allowed)),
            limit=self.limit,
            remaining=max(0, int(remaining)),
            window_s=self.window_s,
            reset_s=max(0, int(reset_us)) / 1e6,
            retry_after_s=max(0, int(retry_us)) / 1e6,
            policy=self.name,
        )
        if self._metrics is not None:
            self._metrics.count(self.name, decision.allowed)
        return decision

    async def hit(self, subject: str) -> RateLimitDecision:
        """Take one grant for ``subject`` if the window has room (one Redis round trip)."""
        reply = await run_script(
            self._script, [self.key(subject)], self.script_args(), self._autopipeline
        )
        return self.decision(*reply)
