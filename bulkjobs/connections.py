"""Redis clients, built once per process from the settings.

Failing fast.  A healthy Redis answers in well under a millisecond, so the timeouts here are
short, and a Redis that does not answer is remembered process-wide for :data:`DOWN_FOR`
seconds (:class:`Outage`): meanwhile every command fails at once with ``ConnectionError``
instead of waiting out its own timeout.  Without that, a frozen or unreachable Redis made
every web request wait — even reads that need only the database, whose rate-limit check
waits, then lets them through — and the web's thread pool filled up: the API hung instead of
answering 503.  A connection broken under a command (a Redis restart) is re-made and the
command retried once, so recovery needs no restart of anything.
"""

from __future__ import annotations

import time
from functools import lru_cache
from typing import Any

import redis
import redis.asyncio
from redis.backoff import NoBackoff
from redis.retry import Retry

from bulkjobs.settings import get_settings
from bulkjobs.synclog import AsyncSyncLog, SyncLog

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
    return _client(get_settings().redis_url)


@lru_cache(maxsize=1)
def get_synclog() -> SyncLog:
    s = get_settings()
    return SyncLog(get_redis(), dedupe_ttl=2 * s.sync_retention_seconds,
                   max_events=s.sync_max_events)


def make_async_redis() -> redis.asyncio.Redis:
    return redis.asyncio.Redis.from_url(get_settings().redis_url, socket_connect_timeout=5)


def make_async_synclog(client: redis.asyncio.Redis) -> AsyncSyncLog:
    return AsyncSyncLog(client)


@lru_cache(maxsize=1)
def get_broker_redis() -> redis.Redis | None:
    """The Celery broker's Redis (for the queue depth), or ``None`` when the broker is not
    Redis (e.g. RabbitMQ)."""
    settings = get_settings()
    url = settings.effective_broker_url
    if not url.startswith(("redis://", "rediss://", "unix://")):
        return None
    if url == settings.redis_url:
        return get_redis()
    return _client(url)
