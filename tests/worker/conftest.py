"""Fixtures of the worker tests.  (Only named fixtures here — nothing autouse — so that the
in-process tests of this directory are unaffected.)"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis
from sqlalchemy import Engine, event

from bulkjobs.synclog import SyncLog
from models.engine import get_engine
from models.seed import SeededProject, SeedResult
from tests.worker.deployment import Deployment, make_deployment


@pytest.fixture
def commits() -> Iterator[list[str]]:
    """The transactions committed meanwhile (one entry each), on the engine every write
    goes through (the write engine is the same pool with other options)."""
    seen: list[str] = []

    def commit(conn: object) -> None:
        seen.append("commit")

    engine = get_engine()
    event.listen(engine, "commit", commit)
    try:
        yield seen
    finally:
        event.remove(engine, "commit", commit)


@pytest.fixture
def log(redis_client: redis.Redis) -> SyncLog:
    """The sync log on the test Redis (once-keys kept ten minutes)."""
    return SyncLog(redis_client, dedupe_ttl=600)


@pytest.fixture
def project(seeded: SeedResult) -> SeededProject:
    """The first of the two seeded demo projects."""
    return seeded.projects[0]


@pytest.fixture
def deployment(services: Engine) -> Iterator[Deployment]:
    """Real ``celery worker`` processes on a Redis database of their own (see
    :mod:`tests.worker.deployment`); every worker is stopped after the test."""
    yield from make_deployment()
