"""A process that finished a job goes on with the next jobs in line of its project, without
their messages (``worker/follow.py``); their messages then find nothing of theirs to do."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import pytest

from bulkjobs.synclog import SyncLog
from models.engine import get_write_engine
from models.pauses import pause
from models.seed import SeededProject, SeedResult
from tests.worker.helpers import cfg, deps, job_events, job_row, new_job
from worker import announced
from worker.announced import ANNOUNCED
from worker.follow import follow
from worker.jobs import CATALOGUE, Context
from worker.runner import run

DELETE = "bulk_delete_records"

pytestmark = pytest.mark.services


def _follow(token: str, log: SyncLog, *, seconds: float = 60.0,
            retries: list[tuple[str, int]] | None = None) -> int:
    later = retries if retries is not None else []
    return follow(token, deps=deps(log), cfg=cfg(follow_seconds=seconds), requeue=pytest.fail,
                  retry_later=lambda t, countdown: later.append((t, countdown)))


def test_the_next_jobs_in_line_of_the_project_run_without_their_messages(
        log: SyncLog, seeded: SeedResult) -> None:
    project, other = seeded.projects[:2]
    tokens = [new_job(log, project, DELETE, [h]) for h in project.heads[:4]]
    elsewhere = new_job(log, other, DELETE, other.heads[:1])
    assert run(tokens[0], deps=deps(log), cfg=cfg(), requeue=pytest.fail) == "done"
    assert _follow(tokens[0], log) == 3
    rows = [job_row(t) for t in tokens]
    assert [r.status for r in rows] == ["done"] * 4
    assert [r.attempts for r in rows] == [1] * 4  # each claimed once, by its own run
    starts = [r.started_on for r in rows]
    assert starts == sorted(starts)  # in queue order
    assert job_row(elsewhere).status == "queued"  # another project's: its message's
    for token in tokens:
        statuses = [e["data"]["status"] for e in job_events(log, token)]
        assert statuses.count("done") == 1 and statuses[0] == "queued"
    # The followed jobs' messages come later and find nothing to do.
    before = [_run_state(t) for t in tokens]
    for token in tokens[1:]:
        assert run(token, deps=deps(log), cfg=cfg(), requeue=pytest.fail) == "skipped"
    assert [_run_state(t) for t in tokens] == before


def _run_state(token: str) -> tuple[object, ...]:
    row = job_row(token)
    return row.status, row.attempts, row.info, row.started_on, row.finished_on, row.owner


def test_following_off_runs_nothing(log: SyncLog, project: SeededProject) -> None:
    first, second = (new_job(log, project, DELETE, [h]) for h in project.heads[:2])
    assert run(first, deps=deps(log), cfg=cfg(), requeue=pytest.fail) == "done"
    assert _follow(first, log, seconds=0) == 0
    assert job_row(second).status == "queued"


def test_a_paused_project_is_not_followed(log: SyncLog, project: SeededProject) -> None:
    first, second = (new_job(log, project, DELETE, [h]) for h in project.heads[:2])
    assert run(first, deps=deps(log), cfg=cfg(), requeue=pytest.fail) == "done"
    with get_write_engine().begin() as conn:
        pause(conn, project.gid, by="test")
    assert _follow(first, log) == 0
    row = job_row(second)
    assert (row.status, row.attempts) == ("queued", 0)


def test_a_followed_run_that_fails_sends_its_retry(
        log: SyncLog, project: SeededProject, monkeypatch: pytest.MonkeyPatch) -> None:
    first, second = (new_job(log, project, DELETE, [h]) for h in project.heads[:2])
    assert run(first, deps=deps(log), cfg=cfg(), requeue=pytest.fail) == "done"

    def broken(conn: object, ctx: Context, ids: Sequence[int]) -> list[object]:
        raise RuntimeError("boom")

    monkeypatch.setitem(CATALOGUE, DELETE, replace(CATALOGUE[DELETE], batch=broken))
    retries: list[tuple[str, int]] = []
    assert _follow(first, log, retries=retries) == 0
    assert retries == [(second, 1)]  # its first failure: retried after the first back-off
    row = job_row(second)
    assert (row.status, row.failures, row.owner) == ("processing", 1, None)


def test_a_followed_jobs_message_finds_out_without_writing(
        log: SyncLog, project: SeededProject, commits: list[str]) -> None:
    """With following on, a message whose job is finished and announced — or held by a live
    run — while nobody's job waits in line learns it from reads alone: no write transaction
    (on SQLite, no writers' turn)."""
    first, second = (new_job(log, project, DELETE, [h]) for h in project.heads[:2])
    assert run(first, deps=deps(log), cfg=cfg(), requeue=pytest.fail) == "done"
    assert _follow(first, log) == 1
    with get_write_engine().begin() as conn:  # the marks the next claim would write
        ANNOUNCED.write(conn)
    assert job_row(second).announced
    commits.clear()
    for token in (first, second):
        assert run(token, deps=deps(log), cfg=cfg(follow_seconds=1.0),
                   requeue=pytest.fail) == "skipped"
    assert commits == []
    third = new_job(log, project, DELETE, project.heads[2:3])
    # a job waiting in line: the message starts it, as any message does
    assert run(second, deps=deps(log), cfg=cfg(follow_seconds=1.0),
               requeue=pytest.fail) == "done"
    assert job_row(third).status == "done"


def test_a_job_whose_mark_waits_here_needs_no_write_to_skip(
        log: SyncLog, project: SeededProject, commits: list[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The end of a line: the process's last run finished its job, whose ``announced`` mark
    still waits for the next claim; a run for it finds nothing to claim from reads alone."""
    monkeypatch.setattr(announced, "DUE_AFTER", 3600.0)  # the mark waits for a claim
    token = new_job(log, project, DELETE, project.heads[:1])
    assert run(token, deps=deps(log), cfg=cfg(), requeue=pytest.fail) == "done"
    assert ANNOUNCED.waiting(token) and not job_row(token).announced
    commits.clear()
    assert run(token, deps=deps(log), cfg=cfg(follow_seconds=1.0),
               requeue=pytest.fail) == "skipped"
    assert commits == []
    assert ANNOUNCED.waiting(token)
