"""One raw RESP connection for the auto-pipeline: where to connect, how, and replies in order.

Why not a redis-py connection: the auto-pipeline (``storage/redis_autopipeline.py``)
writes many callers' commands at once and needs each reply handed to its caller
as it is parsed, without a per-command read. This module does the parts that
concern one connection, so the auto-pipeline only batches, times out and
reconnects.

Connection settings come from the same ``RedisSettings`` as the pooled client
(:meth:`Endpoint.from_settings`): host and port or Unix socket, user and
password, database, TLS verified against ``REDIS_CA_FILE`` or the system CAs
with the hostname checked (there is no way to turn verification off), client
name, connect and socket timeouts, TCP keepalive. Under Sentinel the master's
address is asked of the Sentinels (through the pooled client's pool) at every
connect. Redis Cluster is not served: :meth:`Endpoint.from_settings` returns
None and callers use the pooled client.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import hiredis
import structlog
from redis.asyncio import Redis
from redis.asyncio.connection import SSLConnection, UnixDomainSocketConnection, parse_url
from redis.asyncio.sentinel import SentinelConnectionPool
from redis.exceptions import (
    AuthenticationError,
    BusyLoadingError,
    NoScriptError,
    ReadOnlyError,
    ResponseError,
)
from redis.exceptions import ConnectionError as RedisConnectionError

from config import RedisSettings
from storage.redis_client import CLIENT_NAME, RedisClient, RedisTimeouts, keepalive_options

log = structlog.get_logger(__name__)

_NOT_ENOUGH_DATA = object()


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where and how to connect (under Sentinel, ``sentinel_pool`` is asked for the master)."""

    host: str | None = None
    port: int = 6379
    unix_path: str | None = None
    username: str | None = None
    password: str | None = None
    db: int = 0
    tls: ssl.SSLContext | None = None
    sentinel_pool: SentinelConnectionPool | None = None
    client_name: str | None = CLIENT_NAME
    #: Reply strings are decoded with this (None: bytes).
    encoding: str | None = "utf-8"

    @classmethod
    def from_settings(cls, settings: RedisSettings, pooled: RedisClient) -> Endpoint | None:
        """The endpoint of ``settings`` (None on Cluster, which this client does not serve)."""
        if settings.redis_cluster or not isinstance(pooled, Redis):
            return None
        if settings.redis_sentinels:
            pool = pooled.connection_pool
            assert isinstance(pool, SentinelConnectionPool)
            return cls(sentinel_pool=pool)
        assert settings.redis_url
        options = parse_url(settings.redis_url)
        connection_class = options.get("connection_class")
        unknown = set(options) - {"host", "port", "path", "username", "password", "db",
                                  "connection_class"}
        if unknown:
            # URL options this client would ignore (the pooled client honours them).
            log.info("redis_autopipeline_off", reason=f"URL options {sorted(unknown)}")
            return None
        tls = None
        # Settings refuse REDIS_CA_FILE without rediss://, so the two always agree.
        if connection_class is not None and issubclass(connection_class, SSLConnection):
            tls = ssl.create_default_context(cafile=settings.redis_ca_file)
        is_unix = connection_class is not None and issubclass(
            connection_class, UnixDomainSocketConnection
        )
        return cls(
            host=None if is_unix else options.get("host", "localhost"),
            port=int(options.get("port", 6379)),
            unix_path=options.get("path") if is_unix else None,
            username=options.get("username"),
            password=options.get("password"),
            db=int(options.get("db", 0)),
            tls=tls,
        )

    async def address(self) -> tuple[str, int]:
        """Host and port to connect to; under Sentinel, the master's at this moment."""
        if self.sentinel_pool is not None:
            pool = self.sentinel_pool
            # redis-py leaves get_master_address unannotated.
            host, port = await pool.get_master_address()  # type: ignore[no-untyped-call]
            return str(host), int(port)
        assert self.host is not None
        return self.host, self.port


class RespProtocol(asyncio.Protocol):
    """One connection: replies resolve ``waiters`` in order; ``on_lost`` is told when it ends."""

    def __init__(self, encoding: str | None, on_lost: Callable[[RespProtocol], None]) -> None:
        self._on_lost = on_lost
        reader_options: dict[str, Any] = {"notEnoughData": _NOT_ENOUGH_DATA}
        if encoding:
            reader_options["encoding"] = encoding
        self._reader = hiredis.Reader(**reader_options)
        #: (future, reply deadline on the loop's clock), oldest first.
        self.waiters: deque[tuple[asyncio.Future[Any], float]] = deque()
        self.transport: asyncio.Transport | None = None
        self.lost = False
        #: Became the owner's connection (a failed set-up's connection never does).
        self.was_used = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport, but have its methods.
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        reader = self._reader
        reader.feed(data)
        waiters = self.waiters
        while True:
            try:
                reply = reader.gets()
            except hiredis.ProtocolError as exc:
                self.drop(RedisConnectionError(f"Redis protocol error: {exc}"))
                return
            except UnicodeDecodeError as exc:
                # The whole reply was read: the connection is still in step. Its caller
                # gets the error, as from the pooled client.
                reply = exc
            if reply is _NOT_ENOUGH_DATA:
                return
            if not waiters:
                self.drop(RedisConnectionError("Redis sent a reply nobody asked for"))
                return
            future, _ = waiters.popleft()
            if isinstance(reply, UnicodeDecodeError):
                if not future.done():
                    future.set_exception(reply)
                continue
            if isinstance(reply, hiredis.ReplyError):
                error = _typed_error(str(reply))
                if isinstance(error, ReadOnlyError):
                    # A demoted master: the next command must find the new one.
                    if not future.done():
                        future.set_exception(RedisConnectionError(f"Redis is read-only: {reply}"))
                    self.drop(RedisConnectionError("the Redis master was demoted"))
                    return
                if not future.done():
                    future.set_exception(error)
            elif not future.done():
                future.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.fail_all(RedisConnectionError(
            f"Connection to Redis lost{f': {exc}' if exc else ''}"
        ))
        self._on_lost(self)

    def fail_all(self, error: Exception) -> None:
        self.lost = True
        waiters, self.waiters = self.waiters, deque()
        for future, _ in waiters:
            if not future.done():
                future.set_exception(error)

    def drop(self, error: Exception) -> None:
        """Fail what is pending with ``error`` and close the connection at once."""
        self.fail_all(error)
        if self.transport is not None:
            self.transport.abort()


def _typed_error(message: str) -> ResponseError | AuthenticationError | BusyLoadingError:
    if message.startswith("NOSCRIPT"):
        return NoScriptError(message)
    if message.startswith(("NOAUTH", "WRONGPASS")):
        return AuthenticationError(message)  # a ConnectionError: the API answers 503
    if message.startswith("READONLY"):
        return ReadOnlyError(message)
    if message.startswith("LOADING"):
        return BusyLoadingError(message)
    return ResponseError(message)


async def connect(
    endpoint: Endpoint, timeouts: RedisTimeouts, *, on_lost: Callable[[RespProtocol], None]
) -> RespProtocol:
    """One attempt to open and set up a connection to ``endpoint`` (the caller retries)."""
    loop = asyncio.get_running_loop()
    protocol = RespProtocol(endpoint.encoding, on_lost)
    # Sentinel discovery has its own timeouts (one connect timeout per Sentinel tried).
    host, port = await endpoint.address() if endpoint.unix_path is None else ("", 0)
    async with asyncio.timeout(timeouts.connect_s):
        if endpoint.unix_path is not None:
            await loop.create_unix_connection(lambda: protocol, endpoint.unix_path)
        else:
            await loop.create_connection(
                lambda: protocol, host, port, ssl=endpoint.tls,
                server_hostname=host if endpoint.tls is not None else None,
            )
    assert protocol.transport is not None
    sock = protocol.transport.get_extra_info("socket")
    if sock is not None and endpoint.unix_path is None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        for option, value in keepalive_options().items():
            sock.setsockopt(socket.IPPROTO_TCP, option, value)
    try:
        await _handshake(protocol, endpoint, timeouts)
    except BaseException:
        protocol.transport.abort()
        raise
    return protocol


async def _handshake(protocol: RespProtocol, endpoint: Endpoint, timeouts: RedisTimeouts) -> None:
    """AUTH, SELECT and CLIENT SETNAME, written together; any error fails the connect."""
    commands: list[tuple[Any, ...]] = []
    if endpoint.password is not None:
        commands.append(("AUTH", endpoint.username, endpoint.password) if endpoint.username
                        else ("AUTH", endpoint.password))
    if endpoint.db:
        commands.append(("SELECT", endpoint.db))
    if endpoint.client_name:
        commands.append(("CLIENT", "SETNAME", endpoint.client_name))
    if not commands:
        return
    loop = asyncio.get_running_loop()
    # A server that accepts connections but does not answer is given twice the
    # connect timeout, not the socket timeout, for each attempt.
    budget_s = min(timeouts.socket_s, 2 * timeouts.connect_s)
    deadline = loop.time() + budget_s
    futures = [loop.create_future() for _ in commands]
    protocol.waiters.extend((future, deadline) for future in futures)
    assert protocol.transport is not None
    protocol.transport.write(b"".join(hiredis.pack_command(c) for c in commands))
    try:
        async with asyncio.timeout(budget_s):
            for future in futures:
                await future
    except ResponseError as exc:
        raise RedisConnectionError(f"Redis refused the connection set-up: {exc}") from exc
    finally:
        for future in futures:  # the replies after a failed one are not needed
            if future.done() and not future.cancelled():
                future.exception()
            else:
                future.cancel()
