"""A running job and the other writers (SQLite: writers take turns, see ``models.engine``):
a writer that asks while a job runs gets in before the job's next batch; the job's own
heartbeat never fails; adaptive batches process every item once; a finished job's items are
deleted, also when the run died before it got to that."""

from __future__ import annotations

import fcntl
import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import select, text, update

from bulkjobs.synclog import SyncLog
from models.engine import get_engine, get_write_engine, writers_file
from models.seed import SeededProject
from tests.worker.helpers import cfg, children, deps, job_events, job_row, jobs_t, new_job, records
from worker import reaper
from worker.lease import finish
from worker.runner import run

DELETE = "bulk_delete_records"

pytestmark = pytest.mark.services


def _leaves(project: SeededProject) -> list[dict[str, Any]]:
    """A selection of every head's children: hundreds of one-record items."""
    return [{"children": h} for h in project.heads]


def _position(token: str) -> int:
    with get_engine().connect() as conn:
        return int(conn.execute(select(jobs_t.c.position).where(jobs_t.c.token == token))
                   .scalar_one())


def test_a_writer_asking_while_a_job_runs_gets_in_before_its_next_batch(
    log: SyncLog, project: SeededProject,
) -> None:
    """Each write asked for while the job runs commits within two batches of the moment it
    asked (the batch in hand, and one more should the job have begun it meanwhile), however
    many batches the job has left."""
    if get_engine().dialect.name != "sqlite":
        pytest.skip("PostgreSQL writers take no turns (row locks, no database lock)")
    token = new_job(log, project, DELETE, _leaves(project))
    outcome: list[str] = []
    runner = threading.Thread(target=lambda: outcome.append(
        run(token, deps=deps(log), cfg=cfg(batch_size=1), requeue=lambda t: None)))
    with get_engine().connect() as conn:
        ids = list(conn.execute(text("SELECT id FROM record WHERE project_gid = :p"),
                                {"p": project.gid}).scalars())
    runner.start()
    while _position(token) == 0:  # the job is in its batches
        assert runner.is_alive(), outcome
    gaps = []
    for n in range(20):
        # Asking from here on: flagged as a writer waiting for its turn (as a writer that
        # finds the turn taken flags itself) before the position is read, so that a pause of
        # this thread between the read and the write cannot pass for batches run meanwhile.
        with _asking():
            asked = _position(token)
            with get_write_engine().begin() as conn:  # a small write of another kind
                got = _position_in(conn, token)
                conn.execute(text("UPDATE record SET updated_on = updated_on WHERE id = :i"),
                             {"i": ids[n]})
        if job_row(token).status != "processing":
            break
        gaps.append(got - asked)
    runner.join()
    assert outcome == ["done"]
    assert gaps, "the job ended before any write was measured"
    # job_item ids of one job are consecutive: the position gap counts batches of one item
    assert max(gaps) <= 2, gaps


@contextmanager
def _asking() -> Iterator[None]:
    """Flagged as a writer waiting for its turn (``<db>.waiting``, see ``models.engine``)."""
    path = writers_file(get_engine())
    assert path is not None
    fd = os.open(path + ".waiting", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)  # the flag goes with the file description


def _position_in(conn: Any, token: str) -> int:
    return int(conn.execute(select(jobs_t.c.position).where(jobs_t.c.token == token))
               .scalar_one())


def test_the_heartbeat_never_fails_while_batches_run(
    log: SyncLog, project: SeededProject, caplog: pytest.LogCaptureFixture,
) -> None:
    """With a heartbeat due every few milliseconds and hundreds of batches, no beat fails."""
    token = new_job(log, project, DELETE, _leaves(project))
    with caplog.at_level(logging.WARNING, logger="worker.runner"):
        assert run(token, deps=deps(log), cfg=cfg(batch_size=1, heartbeat_interval=0.002),
                   requeue=lambda t: None) == "done"
    assert not [r for r in caplog.records if "heartbeat" in r.getMessage()]


def test_adaptive_batches_process_every_item_once(log: SyncLog, project: SeededProject) -> None:
    """Batches sized by their time (from a handful up) delete exactly what fixed ones do."""
    recs = records(project.gid)
    expected = {g for h in project.heads for g in children(recs, h)
                if recs[g].status != "deleted" and recs[h].status != "deleted"}
    token = new_job(log, project, DELETE, _leaves(project))
    assert run(token, deps=deps(log), cfg=cfg(batch_size=1000, adaptive_batches=True),
               requeue=lambda t: None) == "done"
    row = job_row(token)
    assert row.info["remaining"] == 0 and row.info["total"] >= len(expected)
    after = records(project.gid)
    assert {g for g in expected if after[g].status == "deleted"} == expected
    terminal = [e for e in job_events(log, token) if e["data"]["status"] in ("done",
                                                                              "rejected")]
    assert len(terminal) == 1


def _items(token: str) -> int:
    with get_engine().connect() as conn:
        return int(conn.execute(text("SELECT COUNT(*) FROM job_item WHERE job_token = :t"),
                                {"t": token}).scalar_one())


def test_a_finished_job_leaves_no_items(log: SyncLog, project: SeededProject) -> None:
    """The items go once the job is done (in slices, before its terminal event)."""
    token = new_job(log, project, DELETE, _leaves(project))
    assert run(token, deps=deps(log), cfg=cfg(batch_size=50), requeue=lambda t: None) == "done"
    assert _items(token) == 0


def test_the_reaper_finishes_a_clean_up_a_crash_interrupted(
    log: SyncLog, project: SeededProject,
) -> None:
    """A run that died after committing the terminal state (items left, no terminal event):
    the reaper deletes the items and appends the event, once."""
    token = new_job(log, project, DELETE, _leaves(project))
    assert run(token, deps=deps(log), cfg=cfg(batch_size=1, slice_seconds=0),
               requeue=lambda t: None) == "sliced"
    assert _items(token) > 0
    with get_write_engine().begin() as conn:  # what the dead run committed last
        assert finish(conn, token, status="done", info={"total": 1}, owner=None)
        conn.execute(update(jobs_t).where(jobs_t.c.token == token)
                     .values(finished_on=jobs_t.c.finished_on - 60))
    assert _items(token) > 0
    reaper.reap(log=log, stale_after=30, queued_stale_after=120, requeue=lambda t: None)
    assert _items(token) == 0
    reaper.reap(log=log, stale_after=30, queued_stale_after=120, requeue=lambda t: None)
    terminal = [e for e in job_events(log, token) if e["data"]["status"] == "done"]
    assert len(terminal) == 1
