"""A small job's whole run in few transactions (``worker/runner.py``,
``worker/batches.py``, ``worker/terminal.py``, ``worker/announced.py``): the claim with its
resolution, its one batch with its terminal state (and its items) — no batch that finds
nothing left, no transaction of its own for a few items' resolution, for its terminal
state, nor for the mark that it was announced, which goes with the process's next claim."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from sqlalchemy import Connection, event, func, select, update

from bulkjobs.synclog import SyncLog
from models.engine import get_engine, get_write_engine
from models.jobs import Job, JobItem
from models.seed import SeededProject
from tests.worker.helpers import (
    cfg,
    deps,
    job_events,
    job_row,
    new_job,
    records,
    space_events,
)
from worker import announced, batches
from worker.runner import run

pytestmark = pytest.mark.services


@pytest.fixture
def marks_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    """The ``announced`` marks wait for the next claim, however long it takes."""
    monkeypatch.setattr(announced, "DUE_AFTER", 3600.0)


@pytest.mark.parametrize("gids", [1, 3])
def test_a_small_job_runs_in_two_write_transactions(
        log: SyncLog, project: SeededProject, commits: list[str], gids: int,
        marks_wait: None) -> None:
    token = new_job(log, project, "bulk_delete_records", project.heads[:gids])
    commits.clear()
    assert run(token, deps=deps(log), cfg=cfg(), requeue=pytest.fail) == "done"
    assert len(commits) == 2, commits  # claim with resolution, batch with terminal state
    row = job_row(token)
    assert row.status == "done" and row.info["remaining"] == 0 and not row.announced
    with get_engine().connect() as conn:
        assert conn.execute(select(func.count()).select_from(JobItem)
                            .where(JobItem.job_token == token)).scalar_one() == 0
    statuses = [(e["data"]["status"], e["data"]["info"].get("remaining"))
                for e in job_events(log, token)]
    assert statuses[:2] == [("queued", None), ("processing", gids)]
    assert statuses[-1] == ("done", 0) and [s for s, _ in statuses].count("done") == 1


def test_a_job_not_done_in_its_first_batch_ends_in_a_transaction_of_its_own(
        log: SyncLog, project: SeededProject, commits: list[str], marks_wait: None) -> None:
    """Only the first batch of a job started at its claim commits its terminal state: a job
    whose first batch is full goes on, and its end takes the usual transaction."""
    token = new_job(log, project, "bulk_delete_records", project.heads[:3])
    commits.clear()
    assert run(token, deps=deps(log), cfg=cfg(batch_size=2), requeue=pytest.fail) == "done"
    assert len(commits) == 4, commits  # claim with resolution, two batches, terminal state
    statuses = [(e["data"]["status"], e["data"]["info"].get("remaining"))
                for e in job_events(log, token)]
    assert statuses[:3] == [("queued", None), ("processing", 3), ("processing", 1)]
    assert statuses[-1] == ("done", 0) and [s for s, _ in statuses].count("done") == 1


def test_a_batch_that_cannot_end_its_job_commits_nothing(
        log: SyncLog, project: SeededProject, monkeypatch: pytest.MonkeyPatch) -> None:
    """The batch's work and the terminal state commit together or not at all: a run whose
    lease is gone when it would end the job leaves the records as they were and the job
    unfinished."""
    token = new_job(log, project, "bulk_delete_records", project.heads[:1])
    before = records(project.gid)
    done_in = batches.done_in

    def lease_taken(conn: Connection, token: str, owner: str, **kw: Any) -> Any:
        conn.execute(update(Job.__table__).where(Job.__table__.c.token == token)
                     .values(owner="another run"))
        return done_in(conn, token, owner, **kw)

    monkeypatch.setattr(batches, "done_in", lease_taken)
    assert run(token, deps=deps(log), cfg=cfg(), requeue=pytest.fail) == "lost"
    assert records(project.gid) == before
    row = job_row(token)
    assert row.status == "processing" and row.info["remaining"] == 1 and row.owner != "another run"
    assert "done" not in [e["data"]["status"] for e in job_events(log, token)]


def test_the_announced_mark_goes_with_the_next_claim(
        log: SyncLog, project: SeededProject, commits: list[str], marks_wait: None) -> None:
    first, second = (new_job(log, project, "bulk_delete_records", [h])
                     for h in project.heads[:2])
    assert run(first, deps=deps(log), cfg=cfg(), requeue=pytest.fail) == "done"
    assert not job_row(first).announced
    commits.clear()
    assert run(second, deps=deps(log), cfg=cfg(), requeue=pytest.fail) == "done"
    assert len(commits) == 2, commits  # the mark took no transaction of its own
    assert job_row(first).announced and not job_row(second).announced


def test_the_announced_mark_is_written_when_no_claim_follows(
        log: SyncLog, project: SeededProject) -> None:
    token = new_job(log, project, "bulk_delete_records", project.heads[:1])
    assert run(token, deps=deps(log), cfg=cfg(), requeue=pytest.fail) == "done"
    deadline = time.monotonic() + 60  # a liveness bound: the thread writes it at once
    while not job_row(token).announced:
        assert time.monotonic() < deadline, "the announced mark was never written"
        time.sleep(0.05)


def test_a_small_job_reads_nothing_outside_those_transactions(
        log: SyncLog, project: SeededProject) -> None:
    """Its run reads the job row, the stored selection and the outbox, and resolves and
    starts the job, in the claim's transaction, and finishes it in its batch's: two
    transactions in all, reads included (the run's own thread; the heartbeat and announcing
    threads read and write on their own)."""
    token = new_job(log, project, "bulk_delete_records", project.heads[:1])
    run_thread = threading.get_ident()
    begun: list[str] = []

    def begin(conn: object) -> None:
        if threading.get_ident() == run_thread:
            begun.append("begin")

    engine = get_engine()
    event.listen(engine, "begin", begin)
    try:
        assert run(token, deps=deps(log), cfg=cfg(), requeue=pytest.fail) == "done"
    finally:
        event.remove(engine, "begin", begin)
    assert len(begun) == 2, begun


def test_jobs_start_no_heartbeat_threads_of_their_own(
        log: SyncLog, project: SeededProject, monkeypatch: pytest.MonkeyPatch) -> None:
    """The process's two heartbeat threads serve every job it runs: ten jobs in a row start
    at most those two (none when an earlier job of the process started them), and no thread
    to append their record events."""
    started: list[str] = []
    start = threading.Thread.start

    def counting(self: threading.Thread) -> None:
        started.append(self.name)
        start(self)

    monkeypatch.setattr(threading.Thread, "start", counting)
    tokens = [new_job(log, project, "bulk_delete_records", [h]) for h in project.heads[:10]]
    before = records(project.gid)
    for token in tokens:
        assert run(token, deps=deps(log), cfg=cfg(record_events=True),
                   requeue=pytest.fail) == "done"
    beats = [n for n in started if n.startswith(("heartbeat", "progress"))]
    assert len(beats) <= 2 and len(set(beats)) == len(beats), started
    # each job's one batch appends its record events itself: nothing to overlap them with
    assert "record-events" not in started, started
    newly = {g for g, r in records(project.gid).items()
             if r.status == "deleted" and before[g].status != "deleted"}
    events = [e["data_key"] for e in space_events(log, project.gid) if e["action"] == "DELETE"]
    assert newly and sorted(events) == sorted(newly)  # every record event, once
    assert {t.name for t in threading.enumerate()} >= {"heartbeat", "progress"}


def test_marks_of_a_claim_that_does_not_commit_wait_again(
        log: SyncLog, project: SeededProject, marks_wait: None) -> None:
    token = new_job(log, project, "bulk_delete_records", project.heads[:1])
    assert run(token, deps=deps(log), cfg=cfg(), requeue=pytest.fail) == "done"
    with pytest.raises(RuntimeError):
        with announced.ANNOUNCED.written() as marks, get_write_engine().begin() as conn:
            marks(conn)
            raise RuntimeError("the claim's transaction fails")
    assert announced.ANNOUNCED.waiting(token) and not job_row(token).announced
    with get_write_engine().begin() as conn:
        announced.ANNOUNCED.write(conn)
    assert job_row(token).announced and not announced.ANNOUNCED.waiting(token)
