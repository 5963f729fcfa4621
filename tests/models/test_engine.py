"""Writers taking turns (SQLite) and batch sizes that follow the time batches take."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

import models.engine as engine_module
from models.engine import (
    BATCH_SECONDS,
    BATCH_SECONDS_CONTENDED,
    get_engine,
    get_write_engine,
    in_slices,
    let_writers_in,
    make_engine,
    next_batch_size,
    writers_waiting,
)

LOW, HIGH = BATCH_SECONDS


@pytest.mark.parametrize("size, seconds, limit, expected", [
    (16, (LOW + HIGH) / 2, 1000, 16),        # on target: kept
    (16, LOW, 1000, 16),                     # the band's edges are on target
    (16, HIGH, 1000, 16),
    (16, 0.0, 1000, 32),                     # nothing measured: doubled
    (16, LOW / 100, 1000, 32),               # far too short: at most doubled
    (16, (LOW + HIGH) / 2 / 1.8, 1000, 28),  # a bit short: by the time per item
    (600, LOW / 100, 1000, 1000),            # never beyond the limit
    (100, (LOW + HIGH) * 2, 1000, 25),       # four times too long: a quarter
    (1000, (LOW + HIGH) * 50, 1000, 10),     # a hundred times too long: a hundredth
    (3, 10.0, 1000, 1),                      # never below one
    (1, 10.0, 1000, 1),
    (5, 0.0, 5, 5),                          # at the limit already
])
def test_next_batch_size(size: int, seconds: float, limit: int, expected: int) -> None:
    """Batches grow by at most 2x and shrink by the measured time per item, within bounds."""
    assert next_batch_size(size, seconds, limit=limit) == expected


def test_batches_are_shorter_while_other_writers_keep_coming() -> None:
    """Against the contended target, a batch on the normal target shrinks."""
    low, high = BATCH_SECONDS_CONTENDED
    assert high < LOW
    assert next_batch_size(100, (LOW + HIGH) / 2, limit=1000,
                           target=BATCH_SECONDS_CONTENDED) == int(100 * (low + high) / (LOW + HIGH))


def test_next_batch_size_converges_on_the_target() -> None:
    """At a steady time per item, sizes settle where a batch takes the target time."""
    per_item = 0.0004  # 400 µs an item: 50-125 items make a batch of 20-50 ms
    size = 1
    for _ in range(30):
        size = next_batch_size(size, size * per_item, limit=100_000)
    assert LOW <= size * per_item <= HIGH


@pytest.fixture
def sqlite(db: Engine) -> Iterator[Engine]:
    if db.dialect.name != "sqlite":
        pytest.skip("PostgreSQL writers take no turns (row locks, no database lock)")
    with get_write_engine().begin() as conn:
        conn.execute(text("CREATE TABLE IF NOT EXISTS turn_marker "
                          "(id INTEGER PRIMARY KEY, who TEXT NOT NULL)"))
        conn.execute(text("DELETE FROM turn_marker"))
    yield db
    with get_write_engine().begin() as conn:
        conn.execute(text("DROP TABLE turn_marker"))


def _mark(conn: object, who: str) -> None:
    conn.execute(text("INSERT INTO turn_marker (who) VALUES (:w)"), {"w": who})  # type: ignore[attr-defined]


def _marks() -> list[str]:
    with get_engine().connect() as conn:
        return list(conn.execute(text("SELECT who FROM turn_marker ORDER BY id")).scalars())


def _waiting(engine: Engine) -> int:
    """How many writers wait for their turn: the shared flocks on ``<db>.waiting``, as the
    kernel lists them (Linux ``/proc/locks``)."""
    st = os.stat(str(engine.url.database) + ".waiting")
    ident = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    return sum(1 for line in Path("/proc/locks").read_text().splitlines()
               if "FLOCK" in line and "READ" in line and "->" not in line
               and line.split()[-3] == ident)


def _until(condition: object, what: str) -> None:
    """Wait for ``condition()``; a generous deadline only turns a hang into a failure."""
    deadline = time.monotonic() + 30
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, what
        time.sleep(0.001)


def test_a_waiting_writer_goes_before_the_jobs_next_transaction(sqlite: Engine) -> None:
    """A writer that asks while a long job's transaction runs is flagged as waiting, and
    once the job lets writers in, it commits before the job's next transaction."""
    job_holds, writer_done = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            job_holds.wait()
            with get_write_engine().begin() as conn:  # waits for the job's turn
                _mark(conn, "writer")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            writer_done.set()

    thread = threading.Thread(target=writer)
    thread.start()
    with get_write_engine().begin() as conn:
        _mark(conn, "job batch 1")
        job_holds.set()
        _until(lambda: writers_waiting(sqlite), "the writer never flagged itself waiting")
    # (The writer may hold the turn before this looks: then it returns at once.)
    let_writers_in(sqlite)
    with get_write_engine().begin() as conn:
        _mark(conn, "job batch 2")
    thread.join()
    assert not errors, errors
    assert _marks() == ["job batch 1", "writer", "job batch 2"]
    assert writers_waiting(sqlite) is False
    assert let_writers_in(sqlite) is False  # nobody waits: no pause


def test_every_waiting_writer_goes_before_the_next_transaction(sqlite: Engine) -> None:
    """Several writers waiting at once all commit before the job's next transaction."""
    job_holds = threading.Event()
    asked = threading.Semaphore(0)

    def writer(n: int) -> None:
        job_holds.wait()
        asked.release()
        with get_write_engine().begin() as conn:
            _mark(conn, f"writer {n}")

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    with get_write_engine().begin() as conn:
        _mark(conn, "job batch 1")
        job_holds.set()
        for _ in threads:
            asked.acquire()
        _until(lambda: _waiting(sqlite) == 4, "not every writer flagged itself waiting")
    let_writers_in(sqlite)
    with get_write_engine().begin() as conn:
        _mark(conn, "job batch 2")
    for t in threads:
        t.join()
    marks = _marks()
    assert marks[0] == "job batch 1" and marks[-1] == "job batch 2"
    assert sorted(marks[1:-1]) == [f"writer {n}" for n in range(4)]


def test_a_rolled_back_writer_hands_its_turn_on(sqlite: Engine) -> None:
    """A write transaction that fails gives its turn back: the next writer is not stuck."""
    with pytest.raises(RuntimeError), get_write_engine().begin() as conn:
        _mark(conn, "rolled back")
        raise RuntimeError("boom")
    with get_write_engine().begin() as conn:
        _mark(conn, "next")
    assert _marks() == ["next"]


def test_in_slices_runs_until_a_slice_comes_short(sqlite: Engine) -> None:
    """Work in slices: each slice its own transaction, until one does fewer rows than asked."""
    with get_write_engine().begin() as conn:
        conn.execute(text("INSERT INTO turn_marker (who) VALUES " +
                          ", ".join(f"('row {i}')" for i in range(100))))
    sizes: list[int] = []

    def step(conn: object, n: int) -> int:
        sizes.append(n)
        return int(conn.execute(text(  # type: ignore[attr-defined]
            "DELETE FROM turn_marker WHERE id IN (SELECT id FROM turn_marker ORDER BY id "
            "LIMIT :n)"), {"n": n}).rowcount)

    assert in_slices(sqlite, step, limit=7, first=3) == 100
    assert _marks() == []
    assert sizes[0] == 3 and max(sizes) <= 7 and len(sizes) >= 100 // 7


def test_the_wal_is_checkpointed_outside_the_turns(sqlite: Engine) -> None:
    """Connections do not checkpoint in their COMMIT (it would lengthen the writer's turn);
    a process that writes checkpoints from a thread of its own."""
    with get_engine().connect() as conn:
        assert conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() == 0
    with get_write_engine().begin() as conn:
        _mark(conn, "written")
    assert any(t.name == "wal-checkpoint" for t in threading.enumerate())


def test_the_wal_stays_bounded_while_a_writer_keeps_committing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A writer that commits without a pause (a job, batch after batch) leaves a checkpoint
    beside it no moment at which every frame is copied back, and SQLite starts the WAL over
    only after such a moment: the checkpoint thread then takes a turn of its own, and the
    WAL stays near :data:`WAL_RESTART_FRAMES` instead of growing by all that was written.
    (A database file of its own: the WAL file keeps the largest size it ever had.)"""
    monkeypatch.setattr(engine_module, "WAL_RESTART_FRAMES", 64)
    monkeypatch.setattr(engine_module, "CHECKPOINT_EVERY", 0.02)
    engine = make_engine(f"sqlite:///{tmp_path}/wal.db")
    writer = engine.execution_options(writer=True)
    with writer.begin() as conn:
        conn.execute(text("CREATE TABLE blob (id INTEGER PRIMARY KEY, data TEXT NOT NULL)"))
    wal = tmp_path / "wal.db-wal"
    blob = "x" * 16_000  # about four pages a row
    largest, written = 0, 0
    deadline = time.monotonic() + 1.0
    try:
        while time.monotonic() < deadline:
            with writer.begin() as conn:
                conn.execute(text("INSERT INTO blob (data) VALUES (:d)"), [{"d": blob}] * 8)
                conn.execute(text("DELETE FROM blob"))
            written += 8 * len(blob)
            largest = max(largest, wal.stat().st_size)
    finally:
        engine.dispose()
    assert written > 40 * 2**20, "the writer wrote too little to tell"
    assert largest < written / 4, (largest, written)
