"""Redis clients, built once per process from the settings."""

from __future__ import annotations

from functools import lru_cache

import redis
import redis.asyncio

from bulkjobs.settings import get_settings
from bulkjobs.synclog import AsyncSyncLog, SyncLog


@lru_cache(maxsize=1)
def get_redis() -> redis.Redis:
    return redis.Redis.from_url(
        get_settings().redis_url, socket_timeout=10, socket_connect_timeout=5,
        health_check_interval=30,
    )


@lru_cache(maxsize=1)
def get_synclog() -> SyncLog:
    return SyncLog(get_redis(), dedupe_ttl=2 * get_settings().sync_retention_seconds)


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
    return redis.Redis.from_url(url, socket_timeout=10, socket_connect_timeout=5)
