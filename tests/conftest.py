"""Test set-up: real Redis and a real database, isolated from a developer's own data.

* ``DATA_DIR`` is a fresh temporary directory per test session.
* Redis: ``TEST_REDIS_URL`` (default database 9 of the local server), flushed per test.
* Database: ``TEST_DATABASE_URL`` when set (PostgreSQL in CI), else a SQLite file in
  ``DATA_DIR``.  Tables are emptied per test.
* Under ``pytest-xdist`` (``make test`` runs two workers) each worker is a session of its
  own: its own ``DATA_DIR`` and Redis prefix, and on PostgreSQL its own database, the test
  database's name with the worker's id appended (``test_gw0``), created when missing.

The environment is set before anything from the project is imported, because settings are
read once per process; subprocesses started by tests inherit it.
"""

from __future__ import annotations

import os
import tempfile

from sqlalchemy import create_engine
from sqlalchemy.engine import make_url


def _worker_database(url: str, worker: str) -> str:
    """``url`` with the xdist worker's id appended to the database's name, created on the
    server when missing (PostgreSQL; other URLs are returned as they are)."""
    base = make_url(url)
    if base.get_backend_name() != "postgresql":
        return url
    own = base.set(database=f"{base.database}_{worker}")
    engine = create_engine(base.set(drivername="postgresql+psycopg"),
                           isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            exists = conn.exec_driver_sql("SELECT 1 FROM pg_database WHERE datname = %s",
                                          (own.database,)).scalar()
            if not exists:
                conn.exec_driver_sql(f'CREATE DATABASE "{own.database}"')
    finally:
        engine.dispose()
    return own.render_as_string(hide_password=False)


_DATA = tempfile.mkdtemp(prefix="bulkjobs-test-")
os.environ["DATA_DIR"] = _DATA
os.environ["REDIS_URL"] = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/9")
os.environ["BROKER_URL"] = os.environ["REDIS_URL"]
os.environ["DATABASE_URL"] = os.environ.get("TEST_DATABASE_URL") or f"sqlite:///{_DATA}/test.db"
if os.environ.get("PYTEST_XDIST_WORKER") and os.environ.get("TEST_DATABASE_URL"):
    os.environ["DATABASE_URL"] = _worker_database(os.environ["DATABASE_URL"],
                                                  os.environ["PYTEST_XDIST_WORKER"])
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
