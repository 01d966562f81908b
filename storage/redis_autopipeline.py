"""Auto-pipelining: one Redis connection per process carries the API's scripts, one write per loop round.

Why: the pooled redis-py client checks a connection out and back in for every
command and reads every reply under its own timeout: about 90 µs of CPU per
command, the largest single cost of a ``get-upload-url`` request. redis-py has
no auto-pipelining (redis/redis-py#3767). This client queues the commands
issued during one event-loop round, writes them as one write on one
connection, and resolves each caller's future from the replies, which Redis
sends in order. hiredis (the parser redis-py itself uses) packs the commands
and parses the replies. Measured in ``bench/gateway.py``; see README.

What it carries: single commands that neither block nor change the
connection's state; in this code base, Lua scripts (:meth:`AutoPipeline.run_script`:
``EVALSHA``, and ``SCRIPT LOAD`` after ``NOSCRIPT``, which means the script did
not run). Never ``BLOCK``, ``SUBSCRIBE``, ``MULTI``/``WATCH`` or ``SELECT``:
those stay on the pooled client.

Where and how it connects (the pooled client's URL, Sentinel, TLS, timeouts)
and the connection itself are in ``storage/redis_connection.py``. Redis Cluster
is not multiplexed: :func:`open_autopipeline` yields None and callers use the
pooled client.

Failure behaviour, the pooled client's contract (the HTTP layer answers 503
for these errors):

* the connection is made on demand, with the connect timeout and exponential
  back-off between attempts; commands wait for it, and raise
  :class:`~redis.exceptions.ConnectionError` if it cannot be made;
* a lost connection fails the commands written on it and not yet answered
  with ``ConnectionError``: they may have run, so they are never re-sent;
  commands not yet written go out on the next connection;
* no reply within the socket timeout drops the connection; every command
  pending on it raises :class:`~redis.exceptions.TimeoutError`;
* ``READONLY`` (a Sentinel master demoted by a failover) drops the connection,
  so the next command goes to the new master, and raises ``ConnectionError``;
  ``LOADING`` raises :class:`~redis.exceptions.BusyLoadingError`;
* a cancelled caller leaves the connection in step: a command not yet written
  is not sent, and the reply of one already written is read and dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import hiredis
import structlog
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import BusyLoadingError, NoScriptError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from config import RedisSettings
from storage.redis_client import BlockingSentinelConnectionPool, RedisClient, RedisTimeouts
from storage.redis_connection import Endpoint, RespProtocol, connect

log = structlog.get_logger(__name__)

#: How often pending replies are checked against the socket timeout (at most).
REPLY_CHECK_INTERVAL_S = 0.5
#: Commands queued or awaiting their reply, at most; beyond, commands fail at once.
MAX_PENDING_COMMANDS = 10_000
#: Errors of one connection attempt that are worth another attempt.
_CONNECT_ERRORS = (OSError, TimeoutError, RedisConnectionError, RedisTimeoutError, BusyLoadingError)


@dataclass(slots=True)
class AutoPipelineStats:
    commands: int = 0
    writes: int = 0
    connects: int = 0
    connect_failures: int = 0
    connections_lost: int = 0
    reply_timeouts: int = 0
    #: Commands refused because MAX_PENDING_COMMANDS were pending.
    refused: int = 0


class AutoPipeline:
    """Commands issued in one event-loop round go out as one write on one shared connection."""

    def __init__(
        self, endpoint: Endpoint, timeouts: RedisTimeouts | None = None, *,
        max_pending: int = MAX_PENDING_COMMANDS,
    ) -> None:
        self._endpoint = endpoint
        self._max_pending = max_pending
        self._timeouts = timeouts or RedisTimeouts()
        # redis-py's own retry loop, with the pool's back-off, around each connect.
        self._retry = Retry(
            ExponentialBackoff(cap=self._timeouts.backoff_cap_s, base=self._timeouts.backoff_base_s),
            # redis-py annotates RedisError subclasses only; it catches whatever the tuple holds.
            self._timeouts.retries, supported_errors=_CONNECT_ERRORS,  # type: ignore[arg-type]
        )
        self._loop = asyncio.get_running_loop()
        self._protocol: RespProtocol | None = None
        self._connecting: asyncio.Task[None] | None = None
        #: Packed commands not yet written, and their callers' futures.
        self._out: list[bytes] = []
        self._out_futures: list[asyncio.Future[Any]] = []
        self._flush_scheduled = False
        self._reply_check: asyncio.TimerHandle | None = None
        self._closed = False
        self.stats = AutoPipelineStats()

    # --- commands

    def execute(self, *args: Any) -> asyncio.Future[Any]:
        """Send one command (str, bytes, int or float arguments); await the result for its reply."""
        if self._closed:
            raise RedisConnectionError("the auto-pipeline is closed")
        if self.pending() >= self._max_pending:
            # Redis is not keeping up (or a connection is on its way): fail fast (503)
            # rather than queue without bound.
            self.stats.refused += 1
            raise RedisConnectionError(
                f"Redis is not keeping up: {self._max_pending} commands already pending"
            )
        future = self._loop.create_future()
        self._out.append(hiredis.pack_command(args))
        self._out_futures.append(future)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)
        return future

    def pending(self) -> int:
        """Commands not yet written plus those written and awaiting their reply."""
        protocol = self._protocol
        return len(self._out) + (len(protocol.waiters) if protocol is not None else 0)

    async def ping(self) -> bool:
        """PING over this connection (readiness)."""
        return bool(await self.execute("PING"))

    async def run_script(self, script: Any, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        """Run a registered script (``redis.asyncio`` ``AsyncScript``): EVALSHA, loading it on NOSCRIPT."""
        try:
            return await self.execute("EVALSHA", script.sha, len(keys), *keys, *args)
        except NoScriptError:
            # The script did not run: load it and run it once more.
            await self.execute("SCRIPT", "LOAD", script.script)
            return await self.execute("EVALSHA", script.sha, len(keys), *keys, *args)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if not self._out:
            return
        protocol = self._protocol
        if protocol is not None and protocol.lost:  # dropped, its connection_lost still to come
            protocol = self._protocol = None
        if protocol is None:
            if self._connecting is None and not self._closed:
                self._connecting = self._loop.create_task(self._connect())
            return
        out, futures = self._out, self._out_futures
        self._out, self._out_futures = [], []
        deadline = self._loop.time() + self._timeouts.socket_s
        waiters = protocol.waiters
        sent = []
        for data, future in zip(out, futures):
            if not future.done():  # a caller cancelled before the write: not sent at all
                waiters.append((future, deadline))
                sent.append(data)
        if not sent:
            return
        assert protocol.transport is not None
        protocol.transport.write(b"".join(sent))
        self.stats.commands += len(sent)
        self.stats.writes += 1
        if self._reply_check is None:
            self._reply_check = self._loop.call_later(self._check_interval_s(), self._check_replies)

    def _check_interval_s(self) -> float:
        return min(REPLY_CHECK_INTERVAL_S, self._timeouts.socket_s / 4)

    def _check_replies(self) -> None:
        """Drop the connection when its oldest pending reply is overdue."""
        self._reply_check = None
        protocol = self._protocol
        if protocol is None or not protocol.waiters:
            return
        if protocol.waiters[0][1] <= self._loop.time():
            self.stats.reply_timeouts += 1
            log.warning("redis_autopipeline_reply_timeout", timeout_s=self._timeouts.socket_s,
                        pending=len(protocol.waiters))
            self._protocol = None
            protocol.drop(RedisTimeoutError("Timeout reading from Redis"))
            self._flush()  # commands not yet written go out on a new connection
            return
        self._reply_check = self._loop.call_later(self._check_interval_s(), self._check_replies)

    # --- connection

    async def _connect(self) -> None:
        """Connect, with back-off between attempts; then write what is queued, or fail it."""
        error: BaseException | None = None
        try:
            protocol = await self._retry.call_with_retry(self._open, self._connect_failed)
            protocol.was_used = True
            self._protocol = protocol
            self.stats.connects += 1
        except asyncio.CancelledError as exc:  # closing
            error = exc
            raise
        except _CONNECT_ERRORS as exc:
            error = exc
        except Exception as exc:  # a bug, or an error outside the list: callers must not wait
            log.exception("redis_autopipeline_connect_failed")
            error = exc
        finally:
            self._connecting = None
            if self._protocol is None:
                self._fail_queued(RedisConnectionError(
                    f"Error connecting to Redis: {type(error).__name__}: {error}"
                ))
        self._flush()

    async def _connect_failed(self, _error: Exception) -> None:
        self.stats.connect_failures += 1

    def _fail_queued(self, error: Exception) -> None:
        futures, self._out, self._out_futures = self._out_futures, [], []
        for future in futures:
            if not future.done():
                future.set_exception(error)

    async def _open(self) -> RespProtocol:
        return await connect(self._endpoint, self._timeouts, on_lost=self._lost)

    def _lost(self, protocol: RespProtocol) -> None:
        if self._protocol is protocol:
            self._protocol = None
        if not self._closed and protocol.was_used:
            self.stats.connections_lost += 1
            log.warning("redis_autopipeline_connection_lost")
        if self._out and not self._closed:
            self._flush()

    def master_switched(self, master: tuple[str, int]) -> None:
        """The Sentinels named ``master`` (``storage.redis_client.follow_master``): unless
        already connected to it, drop the connection, failing what awaits a reply on it with
        ``ConnectionError`` (never re-sent); the next command connects to the new master."""
        protocol = self._protocol
        if protocol is None or protocol.transport is None:
            return
        peer = protocol.transport.get_extra_info("peername")
        if peer is None or (str(peer[0]), int(peer[1])) != master:
            protocol.drop(RedisConnectionError("the Redis master changed"))

    async def aclose(self) -> None:
        """Fail what is pending with ``ConnectionError`` and close the connection."""
        self._closed = True
        if self._reply_check is not None:
            self._reply_check.cancel()
            self._reply_check = None
        closed = RedisConnectionError("the auto-pipeline is closed")
        connecting = self._connecting
        if connecting is not None:
            connecting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await connecting
        self._fail_queued(closed)
        protocol, self._protocol = self._protocol, None
        if protocol is not None and protocol.transport is not None:
            protocol.fail_all(closed)
            protocol.transport.close()


def run_script(
    script: Any, keys: Sequence[Any], args: Sequence[Any], autopipeline: AutoPipeline | None
) -> Awaitable[Any]:
    """Run a registered script (``AsyncScript``) over ``autopipeline`` when there is one,
    else through the pooled client it was registered with."""
    if autopipeline is not None:
        return autopipeline.run_script(script, keys, args)
    return script(keys=list(keys), args=list(args))  # type: ignore[no-any-return]


class AutoPipelineCollector(Collector):
    """``echo_redis_autopipeline_*``: commands, writes (so commands per write), reconnects, timeouts."""

    def __init__(self, pipeline: AutoPipeline) -> None:
        self._pipeline = pipeline

    def collect(self) -> Iterable[Any]:
        stats = self._pipeline.stats
        for name, doc, value in (
            ("commands", "Commands sent on the auto-pipelined connection", stats.commands),
            ("writes", "Writes carrying them (commands / writes = mean batch)", stats.writes),
            ("connects", "Connections made", stats.connects),
            ("connect_failures", "Connection attempts that failed", stats.connect_failures),
            ("connections_lost", "Connections lost while in use", stats.connections_lost),
            ("reply_timeouts", "Connections dropped for a reply later than the socket timeout",
             stats.reply_timeouts),
            ("refused", "Commands refused because too many were pending", stats.refused),
        ):
            yield CounterMetricFamily(f"echo_redis_autopipeline_{name}", doc, value=value)
        yield GaugeMetricFamily(
            "echo_redis_autopipeline_pending", "Commands queued or awaiting their reply",
            value=self._pipeline.pending(),
        )


@asynccontextmanager
async def open_autopipeline(
    settings: RedisSettings, pooled: RedisClient, *, registry: CollectorRegistry | None = None,
    timeouts: RedisTimeouts | None = None,
) -> AsyncIterator[AutoPipeline | None]:
    """The process's auto-pipeline for ``settings`` (None when ``REDIS_AUTOPIPELINE`` is off or
    on Cluster), closed on exit. It connects on first use."""
    endpoint = Endpoint.from_settings(settings, pooled) if settings.redis_autopipeline else None
    if endpoint is None:
        yield None
        return
    pipeline = AutoPipeline(endpoint, timeouts)
    collector = AutoPipelineCollector(pipeline)
    if registry is not None:
        registry.register(collector)
    switches = endpoint.sentinel_pool
    if isinstance(switches, BlockingSentinelConnectionPool):
        switches.on_master_switch.append(pipeline.master_switched)
    try:
        yield pipeline
    finally:
        if isinstance(switches, BlockingSentinelConnectionPool):
            switches.on_master_switch.remove(pipeline.master_switched)
        if registry is not None:
            registry.unregister(collector)
        await pipeline.aclose()
