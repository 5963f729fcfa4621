"""Redis clients through Sentinel (``bulkjobs/connections.py``): with ``REDIS_SENTINELS`` set,
the sync client, the asyncio clients (the web's async routes, the stream server's command
pool) and the broker's client all reach the primary the sentinels name — ``REDIS_URL``'s db
number and password on it, its host unused — and, after the primary is killed and a replica
promoted, the promoted one."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from bulkjobs import connections
from bulkjobs import settings as settings_module
from stream.server import _command_client
from tests.e2e.conftest import free_port
from tests.sentinel import MASTER, SentinelCluster, sentinel_cluster

DB = 5
PASSWORD = "sentinel-test-pw"


def _reset() -> None:
    settings_module.get_settings.cache_clear()
    connections.get_redis.cache_clear()
    connections.get_synclog.cache_clear()
    connections.get_broker_redis.cache_clear()


@pytest.fixture
def cluster() -> Iterator[SentinelCluster]:
    """A Sentinel deployment whose data nodes ask for a password; the process's settings
    point at its sentinels for the test (restored afterwards)."""
    with sentinel_cluster() as c:
        for node in c.nodes:  # primary and replicas alike, so a promoted one asks too
            node.client().config_set("masterauth", PASSWORD)
            node.client().config_set("requirepass", PASSWORD)
            node.password = PASSWORD
        for s in c.sentinels:
            s.client().sentinel_set(MASTER, "auth-pass", PASSWORD)
        env = {"REDIS_SENTINELS": c.addresses, "REDIS_SENTINEL_MASTER": MASTER,
               "REDIS_URL": f"redis://:{PASSWORD}@127.0.0.1:{free_port()}/{DB}",
               "BROKER_URL": ""}
        saved = {name: os.environ.get(name) for name in env}
        os.environ.update(env)
        _reset()
        try:
            yield c
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
            _reset()


def node(cluster: SentinelCluster, port: int) -> redis.Redis:
    return redis.Redis(port=port, db=DB, password=PASSWORD, socket_timeout=2)


def eventually(action: Callable[[], Any], what: str, timeout: float = 60) -> Any:
    """``action()`` once it stops failing with a Redis error (a client that saw the old
    primary die fails fast for a moment before it asks the sentinels again)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return action()
        except redis.RedisError:
            if time.monotonic() > deadline:
                raise AssertionError(f"{what}: still failing after {timeout} s") from None
            time.sleep(0.2)


async def async_round(key: str) -> None:
    """SET through the web's asyncio client and the stream server's command pool."""
    web = connections.make_async_redis()
    stream = _command_client("redis://unused:1/0")
    try:
        await web.set(f"{key}:web", 1)
        await stream.set(f"{key}:stream", 1)
    finally:
        await web.aclose()
        await stream.aclose()


@pytest.mark.heavy
@pytest.mark.timeout(180)
def test_every_client_writes_to_the_primary_sentinel_names(cluster: SentinelCluster) -> None:
    """Sync, asyncio, stream and broker clients write to the primary (REDIS_URL's db and
    password); after a failover each writes to the promoted primary."""
    sync = connections.get_redis()
    broker = connections.get_broker_redis()
    assert broker is sync  # the broker is the sync log's Redis, through Sentinel too
    assert settings_module.get_settings().effective_broker_url.startswith("sentinel://")

    sync.set("before:sync", 1)
    asyncio.run(async_round("before"))
    primary = node(cluster, cluster.primary_port())
    assert sorted(primary.keys("before:*")) == [b"before:stream", b"before:sync", b"before:web"]

    old = cluster.kill_primary()
    new = cluster.wait_failover(old)
    eventually(lambda: sync.set("after:sync", 1), "the sync client")
    eventually(lambda: asyncio.run(async_round("after")), "the asyncio clients")
    assert sorted(node(cluster, new).keys("after:*")) == [
        b"after:stream", b"after:sync", b"after:web"]
