"""Engine, sessions and schema migration.

SQLite (the default) runs in WAL mode with a busy timeout so that the web, worker and
stream processes can share one file; PostgreSQL is reached through psycopg 3.
"""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, text
from sqlmodel import Session

from bulkjobs.settings import get_settings

MIGRATIONS = Path(__file__).parent / "migrations"


def normalise_url(url: str) -> str:
    """Pick the psycopg 3 driver for plain ``postgresql://`` URLs."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


def make_engine(url: str) -> Engine:
    url = normalise_url(url)
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        # LIFO: a thread takes back the connection it just returned.  Each SQLite connection
        # keeps a page cache of its own (cache_size below); FIFO would rotate a worker's
        # batches over every pooled connection and grow every one of those caches.
        busy = get_settings().db_busy_timeout
        engine = create_engine(url, connect_args={"timeout": busy, "check_same_thread": False},
                               pool_use_lifo=True)
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    # JIT off: a batch statement's estimate (a subtree range is costed as a tenth of the
    # table) crosses jit_above_cost, and compiling then costs more than the statement.
    return create_engine(url, pool_size=5, max_overflow=10, pool_pre_ping=True,
                         connect_args={"options": "-c jit=off"})


# Where SQLite keeps temporary b-trees, sort runs and statement journals.  MEMORY suits the
# web and stream processes (small, frequent sorts); a worker process switches to FILE (see
# :func:`use_file_temp_store`): one batch statement that updates 100,000 rows keeps a
# statement journal about as large as those rows, which would count against its RSS (P9).
_SQLITE_TEMP_STORE = ["MEMORY"]


def use_file_temp_store() -> None:
    """Keep SQLite's temporary data in (OS-cached) temporary files rather than in this
    process's memory.  Applies to connections opened afterwards; the worker calls it at
    start-up."""
    _SQLITE_TEMP_STORE[0] = "FILE"


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    # pysqlite's own transaction handling is switched off (isolation_level=None) so that the
    # "begin" hook below decides; see SQLAlchemy's "Serializable isolation / Savepoints" notes.
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute(f"PRAGMA busy_timeout={int(get_settings().db_busy_timeout * 1000)}")
    cur.execute("PRAGMA foreign_keys=OFF")
    cur.execute(f"PRAGMA temp_store={_SQLITE_TEMP_STORE[0]}")
    cur.execute("PRAGMA cache_size=-65536")
    cur.close()


def _sqlite_begin(conn: Any) -> None:
    # Writers begin IMMEDIATE, taking the write lock up front: two writers never fail on a
    # lock upgrade, the second simply waits (busy_timeout).  Readers begin DEFERRED and never
    # block anyone (WAL).
    if conn.get_execution_options().get("writer"):
        conn.exec_driver_sql("BEGIN IMMEDIATE")
    else:
        conn.exec_driver_sql("BEGIN")


@lru_cache(maxsize=1)
def get_engine() -> Engine:
    return make_engine(get_settings().effective_database_url)


@lru_cache(maxsize=1)
def get_write_engine() -> Engine:
    """The engine for transactions that write (``with get_write_engine().begin() as conn``)."""
    return get_engine().execution_options(writer=True)


@contextlib.contextmanager
def session_scope() -> Iterator[Session]:
    """A writing session that commits on success and rolls back on error."""
    with Session(get_write_engine(), expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


def migrate(engine: Engine | None = None) -> None:
    """Bring the schema to the newest migration.  Safe to call from several processes at
    once: a file lock (SQLite) or an advisory lock (PostgreSQL) serialises them."""
    from alembic import command
    from alembic.config import Config

    engine = engine or get_engine()
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with _migration_lock(engine), engine.connect() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
        conn.commit()


@contextlib.contextmanager
def _migration_lock(engine: Engine) -> Iterator[None]:
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(7262)"))
            try:
                yield
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(7262)"))
                conn.commit()
        return
    db_path = Path(str(engine.url.database or "memory"))
    lock_path = db_path.with_name(db_path.name + ".migrate.lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
