"""``bulkjobs.ratelimit``'s failed-login counters against the real Redis: per name and per
address, fixed windows, the wait until the window ends, and keys that expire."""

from __future__ import annotations

import redis

from bulkjobs import keys
from bulkjobs.ratelimit import LoginLimits, login_blocked, login_failed

LIMITS = LoginLimits(per_name=2, per_address=3, window=60)


def test_names_and_addresses_are_counted_apart(redis_client: redis.Redis) -> None:
    """A name is blocked after its own failures only; an address after the failures of every
    name from it; the wait is the rest of the window, and the next window starts afresh."""
    for name in ("ann", "ann", "bob"):
        assert login_blocked(redis_client, LIMITS, name=name, address="10.0.0.1",
                             now=1200.5) is None
        login_failed(redis_client, LIMITS, name=name, address="10.0.0.1", now=1200.5)
    assert login_blocked(redis_client, LIMITS, name="ann", address="10.0.0.2", now=1210.2) == 50
    assert login_blocked(redis_client, LIMITS, name="bob", address="10.0.0.2",
                         now=1210.2) is None
    assert login_blocked(redis_client, LIMITS, name="cy", address="10.0.0.1", now=1259.9) == 1
    assert login_blocked(redis_client, LIMITS, name="ann", address="10.0.0.1",
                         now=1260.0) is None
    ttl = redis_client.ttl(keys.login_failures("name", "ann", 20))
    assert 0 < ttl <= 61


def test_no_limit_and_no_name_count_nothing(redis_client: redis.Redis) -> None:
    """A limit of 0 is no limit; an API-key login (no name) counts for its address only."""
    off = LoginLimits(per_name=0, per_address=0, window=60)
    for _ in range(5):
        login_failed(redis_client, off, name="ann", address="10.0.0.1", now=60.0)
    assert login_blocked(redis_client, off, name="ann", address="10.0.0.1", now=60.0) is None
    for _ in range(3):
        login_failed(redis_client, LIMITS, name=None, address="10.0.0.9", now=60.0)
    assert login_blocked(redis_client, LIMITS, name=None, address="10.0.0.9", now=60.0) == 60
    assert login_blocked(redis_client, LIMITS, name="ann", address="10.0.0.8", now=60.0) is None
