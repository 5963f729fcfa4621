"""Redis clients, built once per process from the settings.

Failing fast.  A healthy Redis answers in well under a millisecond, so the timeouts here are
short, and a Redis that does not answer is remembered process-wide for :data:`DOWN_FOR`
seconds (:class:`Outage`): meanwhile every command fails at once with ``ConnectionError``
instead of waiting out its own timeout.  Without that, a frozen or unreachable Redis made
every web request wait — even reads that need only the database, whose rate-limit check
waits, then lets them through — and the web's thread pool filled up: the API hung instead of
answering 503.  A connection broken under a command (a Redis restart) is re-made and the
command retried once, so recovery needs no restart of anything.

Sentinel.  With ``REDIS_SENTINELS`` and ``REDIS_SENTINEL_MASTER`` set, every client here asks
the sentinels for the current primary before each new connection (redis-py's
``SentinelConnectionPool``), instead of connecting to ``REDIS_URL``'s host; ``REDIS_URL``
still gives the db number, user name and password (and TLS with ``rediss://``).  A primary
that went away fails the command like any outage; a primary demoted to a replica answers
``READONLY``, which drops the connection: the next one goes to the new primary.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from functools import lru_cache
from typing import Any

import redis
import redis.asyncio
import redis.asyncio.sentinel
import redis.sentinel
from redis.backoff import NoBackoff
from redis.connection import SSLConnection, parse_url
from redis.retry import Retry

from bulkjobs.settings import Settings, get_settings
from bulkjobs.synclog import AsyncSyncLog, SyncLog, TerminalWaiters

#: Seconds to wait for Redis to accept a connection.
CONNECT_TIMEOUT = 2.0
#: Seconds to wait for a reply.  Blocking reads (``XREAD BLOCK``) block for less.
SOCKET_TIMEOUT = 3.0
#: After Redis failed to connect or to answer in time, commands fail at once for this long.
DOWN_FOR = 2.0


class Outage:
    """Process-wide memory that Redis just failed to connect or to answer in time."""

    def __init__(self) -> None:
        self.until = 0.0

    def check(self) -> None:
        """Raise ``ConnectionError`` at once while Redis is taken to be down."""
        if time.monotonic() < self.until:
            raise redis.ConnectionError("Redis did not answer moments ago; try again shortly")

    def trip(self) -> None:
        self.until = time.monotonic() + DOWN_FOR


OUTAGE = Outage()


class FailFastConnection(redis.Connection):
    """A TCP connection that consults and feeds :data:`OUTAGE`.  A refused or timed-out
    connect and a reply that timed out trip it; a connection merely reset (Redis restarted)
    does not: it is re-made by the retry."""

    def connect_check_health(self, *args: Any, **kwargs: Any) -> None:
        if self._sock is None:
            OUTAGE.check()
        try:
            super().connect_check_health(*args, **kwargs)
        except (redis.ConnectionError, redis.TimeoutError):
            OUTAGE.trip()
            raise

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        OUTAGE.check()
        super().send_packed_command(command, check_health)

    def read_response(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().read_response(*args, **kwargs)
        except redis.TimeoutError:
            OUTAGE.trip()
            raise


class FailFastSentinelConnection(FailFastConnection, redis.sentinel.SentinelManagedConnection):
    """A connection to the primary that Sentinel names, consulting :data:`OUTAGE` too."""


def primary_kwargs(settings: Settings) -> dict[str, Any]:
    """Connection options of the primary found through Sentinel: ``REDIS_URL``'s db number,
    user name, password and TLS (its host and port are not used)."""
    parsed = parse_url(settings.redis_url)
    out: dict[str, Any] = {k: parsed[k] for k in ("db", "username", "password") if k in parsed}
    if parsed.get("connection_class") is SSLConnection:
        out["ssl"] = True
    return out


def sentinel_kwargs(settings: Settings) -> dict[str, Any]:
    """Options of the connections to the sentinels themselves."""
    out: dict[str, Any] = {"socket_timeout": SOCKET_TIMEOUT,
                           "socket_connect_timeout": CONNECT_TIMEOUT}
    if settings.redis_sentinel_password:
        out["password"] = settings.redis_sentinel_password
    return out


def _sentinel_client(settings: Settings) -> redis.Redis:
    sentinel = redis.sentinel.Sentinel(settings.sentinels,
                                       sentinel_kwargs=sentinel_kwargs(settings))
    primary = primary_kwargs(settings)
    extra: dict[str, Any] = (
        {} if primary.get("ssl") else {"connection_class": FailFastSentinelConnection})
    return sentinel.master_for(
        settings.redis_sentinel_master, socket_timeout=SOCKET_TIMEOUT,
        socket_connect_timeout=CONNECT_TIMEOUT, health_check_interval=30,
        retry=Retry(NoBackoff(), 1, supported_errors=(redis.ConnectionError,)),
        **primary, **extra,
    )


class AsyncSentinelPool(redis.asyncio.sentinel.SentinelConnectionPool):
    """An asyncio pool of connections to the primary, owning its connections to the
    sentinels: closing the client that owns the pool closes those too."""

    async def disconnect(self, inuse_connections: bool = True) -> None:
        await super().disconnect(inuse_connections)
        for client in self.sentinel_manager.sentinels:
            await client.connection_pool.disconnect()


class AsyncBlockingSentinelPool(AsyncSentinelPool, redis.asyncio.BlockingConnectionPool):
    """:class:`AsyncSentinelPool` that waits for a free connection at its limit."""


def async_sentinel_pool(settings: Settings, pool_class: type[AsyncSentinelPool] | None = None,
                        **kwargs: Any) -> redis.asyncio.ConnectionPool:
    """An asyncio pool of connections to the primary the sentinels name."""
    sentinel = redis.asyncio.sentinel.Sentinel(settings.sentinels,
                                               sentinel_kwargs=sentinel_kwargs(settings))
    cls = pool_class or AsyncSentinelPool
    options = {**primary_kwargs(settings), **kwargs, "is_master": True}
    pool: redis.asyncio.ConnectionPool = cls(settings.redis_sentinel_master, sentinel,
                                             **options)
    return pool


def async_client(**kwargs: Any) -> redis.asyncio.Redis:
    """An asyncio client of the sync log's Redis (``REDIS_URL`` or the primary Sentinel
    names) with a pool of its own; ``kwargs`` are connection options."""
    settings = get_settings()
    if settings.sentinels:
        return redis.asyncio.Redis.from_pool(async_sentinel_pool(settings, **kwargs))
    return redis.asyncio.Redis.from_url(settings.redis_url, **kwargs)


def _client(url: str) -> redis.Redis:
    # Only plain TCP gets FailFastConnection: a connection_class given here would replace the
    # TLS class of rediss:// and the socket class of unix:// URLs.  Those keep the short
    # timeouts and the retry, without the outage memory.
    extra: dict[str, Any] = (
        {"connection_class": FailFastConnection} if url.startswith("redis://") else {}
    )
    return redis.Redis.from_url(
        url, socket_timeout=SOCKET_TIMEOUT, socket_connect_timeout=CONNECT_TIMEOUT,
        health_check_interval=30,
        retry=Retry(NoBackoff(), 1, supported_errors=(redis.ConnectionError,)), **extra,
    )


@lru_cache(maxsize=1)
def get_redis() -> redis.Redis:
    settings = get_settings()
    if settings.sentinels:
        return _sentinel_client(settings)
    return _client(settings.redis_url)


@lru_cache(maxsize=1)
def get_synclog() -> SyncLog:
    s = get_settings()
    return SyncLog(get_redis(), dedupe_ttl=2 * s.sync_retention_seconds,
                   max_events=s.sync_max_events, replicas=s.replicas,
                   replica_timeout=s.sync_replica_timeout)


def make_async_redis() -> redis.asyncio.Redis:
    return async_client(socket_connect_timeout=5)


def make_async_synclog(client: redis.asyncio.Redis) -> AsyncSyncLog:
    s = get_settings()
    return AsyncSyncLog(client, replicas=s.replicas, replica_timeout=s.sync_replica_timeout)


_WAITERS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, TerminalWaiters] = (
    weakref.WeakKeyDictionary())


def terminal_waiters() -> TerminalWaiters:
    """The running event loop's waits for jobs' ends, on one reader (an asyncio client
    belongs to the loop it was made on)."""
    loop = asyncio.get_running_loop()
    waiters = _WAITERS.get(loop)
    if waiters is None:
        waiters = _WAITERS[loop] = TerminalWaiters(make_async_redis)
    return waiters


@lru_cache(maxsize=1)
def get_broker_redis() -> redis.Redis | None:
    """The Celery broker's Redis (for the queue depth), or ``None`` when the broker is not
    Redis (e.g. RabbitMQ)."""
    settings = get_settings()
    url = settings.effective_broker_url
    if not url.startswith(("redis://", "rediss://", "unix://", "sentinel://")):
        return None
    if url == settings.redis_url or not settings.broker_url:
        return get_redis()
    return _client(url)
