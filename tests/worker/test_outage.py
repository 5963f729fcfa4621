"""A database that goes away under a running job (``worker/runner.py``, "The database
away"): a real worker process waits and retries without counting failures, so outages more
numerous than the retry limit still end in ``done`` with every item processed once."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable

import pytest
from sqlalchemy import Engine, text

from models.engine import get_engine
from models.seed import SeedResult
from tests.worker.deployment import Deployment, wait_for
from tests.worker.helpers import assert_consistent, entries, records

pytestmark = [pytest.mark.services, pytest.mark.heavy]

DELETE = "bulk_delete_records"
OUTAGES = 4  # one more than the retry limit of jobs that fail (SPEC §6)


def outage(db: Engine) -> Callable[[float], None]:
    """Make the database unusable for the job for ``seconds``: on SQLite hold the write lock
    (longer than the worker's busy timeout); on PostgreSQL keep terminating every other
    connection to the database, the worker's new ones included."""
    if db.dialect.name == "sqlite":
        path = str(db.url.database)

        def locked(seconds: float) -> None:
            conn = sqlite3.connect(path, isolation_level=None, timeout=0)
            try:
                # Spin for the lock: the worker frees it only for a moment between batches,
                # which SQLite's own busy wait (sleeping between tries) can keep missing.
                deadline = time.monotonic() + 30
                while True:
                    try:
                        conn.execute("BEGIN EXCLUSIVE")
                        break
                    except sqlite3.OperationalError:
                        if time.monotonic() > deadline:
                            raise
                time.sleep(seconds)
                conn.execute("ROLLBACK")
            finally:
                conn.close()
        return locked

    def terminated(seconds: float) -> None:
        end = time.monotonic() + seconds
        with db.connect() as conn:
            while time.monotonic() < end:
                conn.execute(text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = "
                    "current_database() AND pid <> pg_backend_pid() "
                    "AND backend_type = 'client backend'"))
                conn.commit()
                time.sleep(0.05)
        get_engine().dispose()  # this process's own pooled connections were terminated too
    return terminated


@pytest.mark.timeout(600)
def test_jobs_wait_out_database_outages_and_end_done(
    deployment: Deployment, seeded: SeedResult, db: Engine,
) -> None:
    """Four outages of a couple of seconds during one job (more than the three retries a
    failing job gets): the job ends ``done``, no failure counted, every item deleted once,
    each outage sent the job back to the queue at least once, and no reaper was needed."""
    project = seeded.projects[0]
    recs = records(project.gid)
    targets = sorted((g for g, r in recs.items() if r.treelevel == 3 and r.status != "deleted"),
                     key=lambda g: recs[g].id)  # some 800, one per batch
    deployment.worker("outage", BATCH_SIZE="1", SLICE_SECONDS="1000", DB_BUSY_TIMEOUT="0.2")
    token = deployment.submit(project.gid, DELETE, targets)
    away = outage(db)
    for n in range(OUTAGES):
        # progress between outages: the job runs again after each one
        done_before = _processed(deployment, token)
        wait_for(lambda before=done_before: _processed(deployment, token) > before + 5,
                 f"job progress before outage {n + 1}", timeout=120)
        away(2.0)
    # No reaper: the worker itself must see the job through (a reaper would re-queue a job
    # whose retries had been given up on, and hide that).
    # A liveness bound, not a speed test: some 800 one-item batches on a loaded machine.
    row = deployment.wait_finished([token], timeout=400, reap_every=None)[token]
    assert row.status == "done", row.info
    assert row.failures == 0 and "error" not in row.info
    assert (row.info["total"], row.info["remaining"], row.info["failed"]) == (len(targets), 0, 0)
    assert row.attempts > OUTAGES
    after = records(project.gid)
    assert all(after[g].status == "deleted" for g in targets)
    assert len(entries(token, "delete")) == len(targets)
    assert_consistent(project.gid)


def _processed(deployment: Deployment, token: str) -> int:
    try:
        info = deployment.row(token).info or {}
    except Exception:  # the database is away this very moment
        return -1
    total, remaining = info.get("total"), info.get("remaining")
    return total - remaining if isinstance(total, int) and isinstance(remaining, int) else 0
