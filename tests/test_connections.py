"""Redis clients (``bulkjobs/connections.py``): fail fast while Redis is unreachable, recover
by themselves, and keep the connection class of TLS and Unix-socket URLs."""

from __future__ import annotations

import pytest
import redis

from bulkjobs import connections
from bulkjobs.settings import get_settings
from tests.e2e.conftest import free_port


@pytest.fixture
def outage(monkeypatch: pytest.MonkeyPatch) -> connections.Outage:
    """A fresh outage memory for this test only (the real one is process-wide)."""
    fresh = connections.Outage()
    monkeypatch.setattr(connections, "OUTAGE", fresh)
    return fresh


@pytest.mark.parametrize(("url", "cls"), [
    ("redis://127.0.0.1:6379/0", connections.FailFastConnection),
    ("rediss://127.0.0.1:6380/0", redis.SSLConnection),
    ("unix:///tmp/redis.sock", redis.UnixDomainSocketConnection),
])
def test_connection_class_follows_the_url_scheme(url: str, cls: type) -> None:
    """Plain TCP fails fast; TLS and Unix-socket URLs keep their own connection classes."""
    assert connections._client(url).connection_pool.connection_class is cls


def test_unreachable_redis_fails_then_fails_at_once(outage: connections.Outage) -> None:
    """A refused connection raises ConnectionError and is remembered: the next command fails
    without trying (the outage message), until the memory lapses and a command tries again."""
    client = connections._client(f"redis://127.0.0.1:{free_port()}/0")
    with pytest.raises(redis.ConnectionError):
        client.ping()
    assert outage.until > 0.0  # taken to be down
    with pytest.raises(redis.ConnectionError, match="moments ago"):
        client.ping()
    outage.until = 0.0  # the memory lapsed: the next command tries again, and fails again
    with pytest.raises(redis.ConnectionError):
        client.ping()
    assert outage.until > 0.0


def test_connection_reset_under_a_command_is_retried_transparently(
        outage: connections.Outage, redis_client: redis.Redis) -> None:
    """A pooled connection killed server-side (as by a Redis restart) is re-made and the
    command retried: no error, and Redis is not taken to be down."""
    client = connections._client(get_settings().redis_url)
    assert client.ping()
    client_id = client.client_id()
    redis_client.client_kill_filter(_id=client_id)
    assert client.ping()
    assert client.client_id() != client_id
    assert outage.until == 0.0
