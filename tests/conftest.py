"""Test set-up: real Redis and a real database, isolated from a developer's own data.

* ``DATA_DIR`` is a fresh temporary directory per test session.
* Redis: ``TEST_REDIS_URL`` (default database 9 of the local server), flushed per test.
* Database: ``TEST_DATABASE_URL`` when set (PostgreSQL in CI), else a SQLite file in
  ``DATA_DIR``.  Tables are emptied per test.

The environment is set before anything from the project is imported, because settings are
read once per process; subprocesses started by tests inherit it.
"""

from __future__ import annotations

import os
import tempfile

_DATA = tempfile.mkdtemp(prefix="bulkjobs-test-")
os.environ["DATA_DIR"] = _DATA
os.environ["REDIS_URL"] = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/9")
os.environ["BROKER_URL"] = os.environ["REDIS_URL"]
os.environ["DATABASE_URL"] = os.environ.get("TEST_DATABASE_URL") or f"sqlite:///{_DATA}/test.db"
os.environ["JWT_SECRET"] = "test-secret-" + os.urandom(24).hex()
os.environ.setdefault("STALE_AFTER", "30")
# A prefix of its own per session: test sessions sharing one Redis never see each other's keys.
os.environ["REDIS_PREFIX"] = "bjtest" + os.urandom(4).hex()

from collections.abc import Iterator  # noqa: E402

import pytest  # noqa: E402
from sqlalchemy import Engine, text  # noqa: E402
from sqlmodel import SQLModel  # noqa: E402

from bulkjobs import keys  # noqa: E402
from bulkjobs.connections import get_redis  # noqa: E402
from models.engine import get_engine, get_write_engine, migrate  # noqa: E402
from models.search.index import clear as clear_search_index  # noqa: E402
from models.seed import SeedResult, seed  # noqa: E402


@pytest.fixture(scope="session")
def schema() -> Engine:
    """The test database at the newest migration, once per session.  PostgreSQL's test
    database is disposable: it starts from an empty schema, so that one migrated by another
    version of the code never gets in the way."""
    engine = get_engine()
    if engine.dialect.name == "postgresql":
        with engine.begin() as conn:
            conn.execute(text("DROP SCHEMA public CASCADE"))
            conn.execute(text("CREATE SCHEMA public"))
    migrate(engine)
    return engine


@pytest.fixture
def db(schema: Engine) -> Iterator[Engine]:
    """The migrated test database, emptied before the test."""
    with get_write_engine().begin() as conn:
        for table in reversed(SQLModel.metadata.sorted_tables):
            conn.execute(text(f'DELETE FROM "{table.name}"'))
        clear_search_index(conn)  # not a SQLModel table (FTS5 / tsvector)
    yield schema


@pytest.fixture
def redis_client():  # type: ignore[no-untyped-def]
    """The test Redis, with every key of this session deleted before the test."""
    client = get_redis()
    stale = list(client.scan_iter(match=f"{keys.prefix()}*", count=1000))
    for i in range(0, len(stale), 1000):
        client.delete(*stale[i : i + 1000])
    yield client


@pytest.fixture
def services(db: Engine, redis_client) -> Engine:  # type: ignore[no-untyped-def]
    """Both real services, clean."""
    return db


@pytest.fixture
def seeded(services: Engine) -> SeedResult:
    """Two small demo projects (1,001 records each) with their users and API keys."""
    with get_write_engine().begin() as conn:
        return seed(conn, records=1001, projects=2, seed_value=7)
