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
