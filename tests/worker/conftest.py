"""Fixtures of the worker tests.  (Only named fixtures here — nothing autouse — so that the
in-process tests of this directory are unaffected.)"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis
from sqlalchemy import Engine

from bulkjobs.synclog import SyncLog
from models.seed import SeededProject, SeedResult
from tests.worker.deployment import Deployment, make_deployment


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
