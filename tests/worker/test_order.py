"""Jobs of one project start in the order they were queued, whatever order their messages
come in (``worker.lease.first_in_line``); jobs of another project are not held behind them."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import update

from bulkjobs.synclog import SyncLog
from models.engine import get_write_engine
from models.jobs import Job
from models.seed import SeededProject, SeedResult
from tests.worker.helpers import cfg, deps, job_row, new_job
from worker.runner import run

DELETE = "bulk_delete_records"
jobs = Job.__table__

pytestmark = pytest.mark.services


def _started(tokens: list[str]) -> list[str]:
    """The tokens of the jobs that have started (been claimed), in ``tokens`` order."""
    return [t for t in tokens if job_row(t).attempts > 0]


def test_messages_in_any_order_start_jobs_in_queue_order(log: SyncLog,
                                                         seeded: SeedResult) -> None:
    """Each message starts the project's oldest job not started yet; a message whose job
    another message started starts the next one; every job ends done, each run once."""
    p = seeded.projects[0]
    first, second, third = (new_job(log, p, DELETE, [h]) for h in p.heads[:3])
    tokens = [first, second, third]
    config = cfg()
    assert run(third, deps=deps(log), cfg=config, requeue=pytest.fail) == "done"
    assert _started(tokens) == [first]
    assert run(first, deps=deps(log), cfg=config, requeue=pytest.fail) == "done"  # its job ran
    assert _started(tokens) == [first, second]
    assert run(second, deps=deps(log), cfg=config, requeue=pytest.fail) == "done"
    assert _started(tokens) == tokens
    assert [job_row(t).status for t in tokens] == ["done"] * 3
    assert [job_row(t).attempts for t in tokens] == [1, 1, 1]
    started = [job_row(t).started_on for t in tokens]
    assert started == sorted(started)
    # a spare message (its job and every other of the project started): nothing to do
    assert run(third, deps=deps(log), cfg=config, requeue=pytest.fail) == "skipped"


def test_another_projects_job_is_not_held_behind(log: SyncLog, seeded: SeedResult) -> None:
    """A job of another project starts on its own message while older jobs wait."""
    p, q = seeded.projects
    older = new_job(log, p, DELETE, [p.heads[0]])
    other = new_job(log, q, DELETE, [q.heads[0]])
    assert run(other, deps=deps(log), cfg=cfg(), requeue=pytest.fail) == "done"
    assert job_row(other).status == "done" and job_row(older).attempts == 0


def test_a_started_job_is_resumed_by_its_own_message(log: SyncLog, seeded: SeedResult) -> None:
    """A job that gave its worker back (a slice) resumes on its own message, even with
    another job of its project not started yet."""
    p = seeded.projects[0]
    sliced = new_job(log, p, DELETE, [{"children": h} for h in p.heads])
    assert run(sliced, deps=deps(log), cfg=cfg(batch_size=1, slice_seconds=0),
               requeue=lambda t: None) == "sliced"
    # a job of the project that has not started does not take the sliced job's message
    waiting = new_job(log, p, DELETE, [p.heads[0]])
    assert job_row(waiting).created_on > job_row(sliced).created_on
    assert run(sliced, deps=deps(log), cfg=cfg(batch_size=1000), requeue=pytest.fail) == "done"
    assert job_row(waiting).attempts == 0


def race_for_the_first_job(log: SyncLog, project: SeededProject, *, message_for: str) -> str:
    """Two jobs queued; another run's claim of the first one held uncommitted while a run for
    the message of ``message_for`` (``"first"`` or ``"second"``) starts.  That run must not
    wait for the other claim: it passes over the row that claim holds and starts the second
    job while the other claim is still open.  Its outcome."""
    engine = get_write_engine()
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite serialises writers: the race cannot happen there")
    first, second = (new_job(log, project, "bulk_delete_records", [h])
                     for h in project.heads[:2])
    token = {"first": first, "second": second}[message_for]
    outcome: list[str] = []
    with engine.connect() as other:  # the other run's claim of the first job, not committed
        other.begin()
        other.execute(update(jobs).where(jobs.c.token == first)
                      .values(owner="other-run", attempts=1))
        thread = threading.Thread(target=lambda: outcome.append(
            run(token, deps=deps(log), cfg=cfg(), requeue=lambda t: None)))
        thread.start()
        thread.join(60)  # a run waiting on the first job's row lock would still be here
        still_waiting = thread.is_alive()
        other.commit()
    thread.join(60)
    assert not still_waiting, "the run waited for the other claim's row lock"
    assert job_row(second).status == "done" and job_row(second).attempts == 1
    assert job_row(first).owner == "other-run"  # the other claim's job was left to it
    return outcome[0]


def test_a_message_whose_first_in_line_is_being_claimed_starts_the_next(
        log: SyncLog, seeded: SeedResult) -> None:
    """Two messages taken at once both look for the job first in line: the run that comes
    second passes over the job the other run's claim holds and starts the next job in line,
    without waiting for that claim, so no message is spent without starting one.
    (PostgreSQL; SQLite runs the two transactions one at a time.)"""
    assert race_for_the_first_job(log, seeded.projects[0], message_for="second") == "done"


def test_a_message_whose_own_job_is_being_claimed_starts_the_next(
        log: SyncLog, seeded: SeedResult) -> None:
    """The message of the job first in line, taken while another message (the second job's)
    claims that job: the run passes over it and starts the second job, the one the other
    message was sent for, so neither message is spent without starting a job.
    (PostgreSQL; SQLite runs the two transactions one at a time.)"""
    assert race_for_the_first_job(log, seeded.projects[0], message_for="first") == "done"
