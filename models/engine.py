"""Engine, sessions and schema migration.

SQLite (the default) runs in WAL mode so that the web, worker and stream processes can share
one file; PostgreSQL is reached through psycopg 3.

**Writers take turns (SQLite).**  SQLite has one write lock for the whole file, and its busy
handler does not queue the writers that want it: each sleeps in growing steps (up to 100 ms)
and tries again, so a writer that waits loses to a job that takes the lock back the moment
its batch commits, and can starve for seconds.  So every write transaction — a connection
with the ``writer=True`` execution option (:func:`get_write_engine`) — takes its *turn*
first: an exclusive ``flock`` on a side file next to the database, ``<db>.writers``, opened
per connection, held from just before ``BEGIN IMMEDIATE`` until just after the commit or
rollback.  A writer that finds the turn taken waits for it in the kernel (no polling, no
sleeping steps) and says so while it waits: it holds a shared ``flock`` on a second file,
``<db>.waiting``.  A job, between two batches, calls :func:`let_writers_in`, which sees
(``LOCK_EX | LOCK_NB`` on ``<db>.waiting`` fails) whether anyone waits and, if so, pauses
until every waiter has had the turn handed over (they let go of ``<db>.waiting`` once they
hold the turn; the pause is bounded by :data:`PASS_TURN_MAX`).  The job's next transaction
then queues behind them.  Batches are short (the runner sizes them to take tens of
milliseconds), so a writer waits at most for the batch in hand: the web process's submits,
cancels and the job's own heartbeat are never stuck behind a job.  A process that dies
releases its ``flock``\ s with its file descriptors, so a crash leaves no turn held.  The WAL
is copied back into the database file outside the turns (:class:`Checkpointer`).
Transactions that read (``BEGIN`` deferred) take no turn: WAL readers never wait.  Writers
that do not take turns (another program on the file) still meet SQLite's busy timeout
(``DB_BUSY_TIMEOUT``).  The wait for a turn has no timeout of its own: every turn is held
for one short transaction, and a dead holder's ends with its process.  So a thread must not
open a write transaction while it holds another (it would wait for itself; SQLite alone
would have failed it after the busy timeout).

PostgreSQL locks rows, not the database: writers there take no turns.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.orm import Session

from bulkjobs.settings import get_settings

MIGRATIONS = Path(__file__).parent / "migrations"
logger = logging.getLogger(__name__)


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
                               pool_use_lifo=True, hide_parameters=True, **_pool_sizes())
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin)
        if path and path != ":memory:":
            _take_turns(engine, path)
        return engine
    # JIT off: a batch statement's estimate (a subtree range is costed as a tenth of the
    # table) crosses jit_above_cost, and compiling then costs more than the statement.
    return create_engine(url, pool_pre_ping=True, connect_args={"options": "-c jit=off"},
                         hide_parameters=True, **_pool_sizes())


def _pool_sizes() -> dict[str, int]:
    """The pool keeps ``DB_POOL_SIZE`` connections, opened as they are first needed, and opens
    up to :data:`POOL_OVERFLOW` more for a burst.  A connection beyond the kept ones is
    closed when it is handed back, so a pool smaller than the requests (or threads) that use
    it at once opens and closes a connection for nearly each of them: 16 concurrent clients
    of the web process did so with SQLAlchemy's default of 5."""
    return {"pool_size": get_settings().db_pool_size, "max_overflow": POOL_OVERFLOW}


#: Connections a pool opens beyond ``DB_POOL_SIZE`` for a burst, closed when handed back.
POOL_OVERFLOW = 10


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
    # lock upgrade.  Before that they take their turn (module docstring), so that the second
    # waits in the kernel's queue rather than in SQLite's busy handler.  Readers begin
    # DEFERRED and never block anyone (WAL).
    if conn.get_execution_options().get("writer"):
        turn: Turn | None = conn.connection.info.get("turn")
        if turn is not None:
            turn.take()
        try:
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        except BaseException:
            if turn is not None:
                turn.give_back()
            raise
    else:
        conn.exec_driver_sql("BEGIN")


#: The longest a job pauses between two batches for writers waiting their turn (seconds).
PASS_TURN_MAX = 0.25


class Turn:
    """One SQLite connection's part in the writers' turns: its own open file descriptions of
    ``<db>.writers`` and ``<db>.waiting`` (``flock`` locks belong to an open file
    description, so two connections of one process exclude each other as two processes do).
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.pid = 0
        self.writers = self.waiting = -1
        self.held = False

    def _open(self) -> None:
        # A forked child must not share its parent's descriptions (nor their locks).
        if self.pid != os.getpid():
            self.pid = os.getpid()
            self.writers = os.open(self.path + ".writers", os.O_RDWR | os.O_CREAT, 0o644)
            self.waiting = os.open(self.path + ".waiting", os.O_RDWR | os.O_CREAT, 0o644)
            self.held = False

    def take(self) -> None:
        """Wait for the turn (in the kernel), flagged as waiting while it is taken."""
        self._open()
        try:
            fcntl.flock(self.writers, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fcntl.flock(self.waiting, fcntl.LOCK_SH)
            try:
                fcntl.flock(self.writers, fcntl.LOCK_EX)
            finally:
                fcntl.flock(self.waiting, fcntl.LOCK_UN)
        self.held = True

    def give_back(self) -> None:
        if self.held and self.pid == os.getpid():
            self.held = False
            fcntl.flock(self.writers, fcntl.LOCK_UN)

    def close(self) -> None:
        if self.pid == os.getpid():
            os.close(self.writers)
            os.close(self.waiting)
        self.pid = 0


def _take_turns(engine: Engine, path: str) -> None:
    """Give each connection of ``engine`` a :class:`Turn`, handed back right after its commit
    or rollback.  SQLAlchemy's ``commit``/``rollback`` events fire *before* the database
    commits, so the dialect's own ``do_commit``/``do_rollback`` are wrapped instead: a turn
    handed over while COMMIT still runs would leave the next writer in the busy handler."""

    @event.listens_for(engine, "connect")
    def _connect(dbapi_conn: Any, record: Any) -> None:
        record.info["turn"] = Turn(path)
        # Checkpoints run outside the turns (Checkpointer), not in the COMMIT that crosses
        # the WAL's page limit: there they would lengthen that writer's turn.
        dbapi_conn.execute("PRAGMA wal_autocheckpoint=0")

    @event.listens_for(engine, "close")
    def _close(_dbapi_conn: Any, record: Any) -> None:
        turn = record.info.pop("turn", None)
        if turn is not None:
            turn.give_back()
            turn.close()

    dialect = engine.dialect
    commit, rollback = dialect.do_commit, dialect.do_rollback

    checkpointer = _checkpointer(path)

    def do_commit(dbapi_conn: Any) -> None:
        try:
            commit(dbapi_conn)
        finally:
            if _give_back(dbapi_conn):
                checkpointer.committed()

    def do_rollback(dbapi_conn: Any) -> None:
        try:
            rollback(dbapi_conn)
        finally:
            _give_back(dbapi_conn)

    dialect.do_commit = do_commit  # type: ignore[method-assign,assignment]
    dialect.do_rollback = do_rollback  # type: ignore[method-assign,assignment]


def _give_back(dbapi_conn: Any) -> bool:
    """Hand the connection's turn back; whether it held one (it wrote)."""
    try:
        info = dbapi_conn.info  # the pool's proxy of the connection
    except (AttributeError, NotImplementedError):  # the first connect's own round trips
        return False
    turn = info.get("turn")
    if turn is None or not turn.held:
        return False
    turn.give_back()
    return True


#: Seconds between two checkpoints of the WAL by one process (while it writes).
CHECKPOINT_EVERY = 0.2
#: Frames (pages) in the WAL after a checkpoint from which the next one takes a writers'
#: turn, so that the WAL starts over (:class:`Checkpointer`): 16 MiB of 4 KiB pages.
WAL_RESTART_FRAMES = 4096
#: Checkpoints run back to back before the one in a turn of its own.
CATCH_UP_ROUNDS = 2


class Checkpointer:
    """Copies the WAL back into the database file from a thread of its own, after writes,
    at most every :data:`CHECKPOINT_EVERY` seconds, in ``PASSIVE`` mode (it waits for
    nobody and nobody waits for it; what readers still need stays for the next round).

    SQLite would checkpoint inside the COMMIT of the transaction that takes the WAL past
    1,000 pages, and a COMMIT holds the writers' turn until it returns: every writer queued
    behind a job would wait for the job's checkpoints too.  Connections of this module
    switch that off (``wal_autocheckpoint=0``) and each process that writes runs this
    thread instead; it uses a connection of its own, which takes no turn.

    The WAL is bounded.  SQLite writes the WAL from its start again (instead of appending
    to it) only when a write transaction begins after a checkpoint that copied *every*
    frame back; with a job committing batch after batch, a checkpoint that runs beside it
    never catches up, and the WAL would grow by everything the job writes (gigabytes for a
    million-record job; each commit then extends the file, several times the cost of
    writing into it).  So once a checkpoint leaves at least :data:`WAL_RESTART_FRAMES`
    frames in the WAL, the thread checkpoints again (:data:`CATCH_UP_ROUNDS` times, each
    round copying what was written during the one before), then takes a writers' turn of
    its own and checkpoints once more: only the frames written since its last round are
    left to copy, no writer adds any meanwhile, and the next write transaction starts the
    WAL over."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.dirty = threading.Event()
        self.pid = 0
        self.lock = threading.Lock()

    def committed(self) -> None:
        self.dirty.set()
        if self.pid != os.getpid():  # first write of this process (or of a forked child)
            with self.lock:
                if self.pid != os.getpid():
                    self.pid = os.getpid()
                    self.dirty = threading.Event()
                    self.dirty.set()
                    threading.Thread(target=self._run, args=(self.dirty,), daemon=True,
                                     name="wal-checkpoint").start()

    def _run(self, dirty: threading.Event) -> None:
        conn = sqlite3.connect(self.path, timeout=get_settings().db_busy_timeout,
                               isolation_level=None, check_same_thread=False)
        turn = Turn(self.path)
        while True:
            dirty.wait()
            dirty.clear()
            try:
                frames = self.checkpoint(conn)
                if frames >= WAL_RESTART_FRAMES:
                    # Catch up outside the turn first: each round copies only what was
                    # written during the one before, so the turn has little left to copy.
                    for _ in range(CATCH_UP_ROUNDS):
                        self.checkpoint(conn)
                    turn.take()
                    try:
                        self.checkpoint(conn)
                    finally:
                        turn.give_back()
            except sqlite3.Error:  # busy or away: the next write brings the next round
                logger.debug("WAL checkpoint of %s failed", self.path, exc_info=True)
            time.sleep(CHECKPOINT_EVERY)

    @staticmethod
    def checkpoint(conn: sqlite3.Connection) -> int:
        """One ``PASSIVE`` checkpoint; the frames in the WAL (copied back or not)."""
        _busy, frames, _copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        return int(frames)


_checkpointers: dict[str, Checkpointer] = {}


def _checkpointer(path: str) -> Checkpointer:
    return _checkpointers.setdefault(path, Checkpointer(path))


def writers_file(engine: Engine) -> str | None:
    """The database file whose writers take turns, or ``None`` (PostgreSQL, in-memory)."""
    if engine.dialect.name != "sqlite":
        return None
    path = engine.url.database
    return path if path and path != ":memory:" else None


def writers_waiting(engine: Engine) -> bool:
    """Whether a writer waits for its turn on ``engine``'s database right now."""
    path = writers_file(engine)
    if path is None:
        return False
    fd = os.open(path + ".waiting", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def let_writers_in(engine: Engine, *, limit: float = PASS_TURN_MAX) -> bool:
    """Between two write transactions of a long job: if writers wait for their turn, pause
    until each of them holds it (at most ``limit`` seconds), so that the caller's next
    transaction comes after theirs.  Returns whether anyone was waiting.  Call it without a
    write transaction open (the waiters need the turn it holds)."""
    path = writers_file(engine)
    if path is None:
        return False
    fd = os.open(path + ".waiting", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = 0.0
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:  # a writer is between asking and holding the turn
                now = time.monotonic()
                if not deadline:
                    deadline = now + limit
                elif now >= deadline:
                    return True
                time.sleep(0.0002)
                continue
            fcntl.flock(fd, fcntl.LOCK_UN)
            return bool(deadline)
    finally:
        os.close(fd)


@lru_cache(maxsize=1)
def get_engine() -> Engine:
    return make_engine(get_settings().effective_database_url)


@lru_cache(maxsize=1)
def get_write_engine() -> Engine:
    """The engine for transactions that write (``with get_write_engine().begin() as conn``)."""
    return get_engine().execution_options(writer=True)


def begin_writing(session: Session) -> None:
    """End ``session``'s transaction (it holds nothing to keep: reads) and begin a write one
    (on SQLite ``BEGIN IMMEDIATE``, in its writers' turn), for a read-then-write through an
    ORM session.  A transaction begun as a reader cannot take the write lock once another
    writer committed after its first read (WAL: "database is locked" at once, whatever the
    busy timeout), and a request's session has read (its authorisation) before its route
    writes."""
    session.commit()
    session.connection(execution_options={"writer": True})


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


#: What one write transaction of a long piece of work should take (seconds), low and high:
#: long enough that what each transaction costs besides its rows (the job row, progress,
#: the commit) stays small, short enough that a writer waiting for its turn is served
#: within tens of milliseconds.
BATCH_SECONDS = (0.02, 0.05)
#: The same while other writers keep coming (one waited for its turn within the last
#: :data:`CONTENDED_SECONDS`): a writer that arrives during a batch waits for the rest of it,
#: so while others write, batches are shorter, at some cost in throughput.
BATCH_SECONDS_CONTENDED = (0.004, 0.01)
CONTENDED_SECONDS = 1.0
#: The size of the first batch of a long piece of work, before anything was measured.
FIRST_BATCH = 16


def next_batch_size(size: int, seconds: float, *, limit: int,
                    target: tuple[float, float] = BATCH_SECONDS) -> int:
    """The size of the next batch after one of ``size`` items took ``seconds``.

    Within ``target`` the size stays.  Outside it the size is scaled by the measured time
    per item towards the middle of ``target``: up by at most a factor of two per batch
    (one batch's time is a noisy measure, and a size too large costs every waiting writer),
    down by as much as it takes.  Never below 1 nor above ``limit``."""
    low, high = target
    if low <= seconds <= high:
        factor = 1.0
    elif seconds <= 0:
        factor = 2.0
    else:
        factor = min(2.0, (low + high) / 2 / seconds)
    return max(1, min(limit, int(size * factor)))


def in_slices(engine: Engine, step: Any, *, limit: int,
              first: int = FIRST_BATCH) -> int:
    """Run ``step(conn, n) -> rows`` in write transactions of their own, each with an ``n``
    sized to take :data:`BATCH_SECONDS` (at most ``limit``), letting waiting writers in
    between, until a step does fewer than ``n`` rows; returns the rows in all.  For work that
    may repeat a slice after a crash (deleting, copying by position)."""
    size, total = min(first, limit), 0
    writer = engine.execution_options(writer=True)
    while True:
        with writer.begin() as conn:
            started = time.perf_counter()
            rows = step(conn, size)
        seconds = time.perf_counter() - started  # the commit included, the wait for the turn not
        total += rows
        if rows < size:
            return total
        size = next_batch_size(size, seconds, limit=limit)
        let_writers_in(engine)


def database_answers() -> None:
    """``SELECT 1`` on the database; raises when it does not answer (health checks)."""
    with get_engine().connect() as conn:
        conn.execute(text("SELECT 1"))
