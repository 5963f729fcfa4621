"""Failed items kept (``models/failures.py``, written by ``worker/batches.py``) and retried
(``worker/rerun.py``): every failure of a job is kept with its reason, beyond the 20 of
``info.errors``, once however often its batch commits; a retry resolves exactly those
items; the rows go with their job."""

from __future__ import annotations

import time
from typing import Any

import pytest
from sqlalchemy import func, select, text, update

from bulkjobs.errors import NotFound, Unprocessable
from bulkjobs.synclog import SyncLog
from models.engine import get_engine, get_write_engine
from models.failures import JobFailure
from models.jobs import expire_finished
from models.seed import SeededProject, SeedResult
from tests.worker.helpers import (
    ACTOR,
    cfg,
    children,
    deps,
    do,
    entries,
    job_row,
    jobs_t,
    new_job,
    records,
    run_to_end,
)
from worker.rerun import retry_failed
from worker.runner import run

pytestmark = pytest.mark.services

DELETE, UNDELETE = "bulk_delete_records", "bulk_undelete_records"
failures_t = JobFailure.__table__


def kept(token: str) -> list[tuple[str, str]]:
    """The failure rows of a job, ``(gid, reason)`` in the order they were written."""
    with get_engine().connect() as conn:
        return [tuple(r) for r in conn.execute(  # type: ignore[misc]
            select(failures_t.c.gid, failures_t.c.reason)
            .where(failures_t.c.job_token == token).order_by(failures_t.c.id))]


def inside_deleted_head(project: SeededProject, n: int) -> list[str]:
    """``n`` grandchildren of the seeded deleted head (deleting them fails: "already
    deleted"), in id order."""
    recs = records(project.gid)
    head = next(h for h in project.heads if recs[h].status == "deleted")
    kids = [g for g, r in recs.items() if r.treelevel == 3 and r.mpath.startswith(recs[head].mpath)]
    return sorted(kids, key=lambda g: recs[g].id)[:n]


def live_grandchildren(project: SeededProject, n: int) -> list[str]:
    recs = records(project.gid)
    return sorted((g for g, r in recs.items() if r.status != "deleted" and r.treelevel == 3),
                  key=lambda g: recs[g].id)[:n]


def retry(log: SyncLog, project: SeededProject, token: str) -> str:
    return retry_failed(project_gid=project.gid, token=token, actor=ACTOR, log=log,
                        enqueue=lambda tokens: None)


def test_every_failure_is_kept_with_its_reason_beyond_the_first_twenty(
    log: SyncLog, project: SeededProject,
) -> None:
    """25 of 28 items fail over batches of 7: ``info.errors`` keeps its first 20 and the job
    keeps all 25, with their reasons, in item order, after the job finished."""
    recs = records(project.gid)
    bad = inside_deleted_head(project, 25)
    selection = sorted(bad + live_grandchildren(project, 3), key=lambda g: recs[g].id)
    token, row = do(log, project, DELETE, selection, batch_size=7)
    assert row.status == "done" and row.info["failed"] == 25 and len(row.info["errors"]) == 20
    assert kept(token) == [(g, "already deleted") for g in selection if g in set(bad)]


def test_a_batch_committed_again_keeps_each_failure_once(
    log: SyncLog, project: SeededProject,
) -> None:
    """A batch that commits a second time over the same items (the job's position put back
    after it) fails them again, yet the job keeps one row per failed item."""
    bad = inside_deleted_head(project, 25)
    token = new_job(log, project, DELETE, bad)
    assert run(token, deps=deps(log), cfg=cfg(batch_size=7, slice_seconds=0),
               requeue=lambda t: None) == "sliced"
    assert len(kept(token)) == 7
    with get_write_engine().begin() as conn:  # the first batch goes again
        conn.execute(update(jobs_t).where(jobs_t.c.token == token).values(position=0))
    assert run_to_end(token, log, cfg(batch_size=7))[-1] == "done"
    assert job_row(token).info["failed"] == 32  # counted twice: the batch did run twice
    assert kept(token) == [(g, "already deleted") for g in bad]


def test_retry_takes_exactly_the_failed_items(log: SyncLog, seeded: SeedResult) -> None:
    """An undelete fails 25 records whose parent is deleted and one permanently deleted
    record, and undeletes another; once the parents are back, its retry is a job of the
    same kind over exactly the 26 failed items (its selection names the job, not them):
    the 25 come back, the permanently deleted one fails again."""
    project = seeded.projects[0]
    recs = records(project.gid)
    head = next(h for h in project.heads if recs[h].status != "deleted")
    parents = children(recs, head)[:4]
    grandchildren = [g for p in parents[:3] for g in children(recs, p)][:25]
    gone = children(recs, parents[3])[0]
    other = next(h for h in project.heads if recs[h].status == "deleted")
    do(log, project, DELETE, [*grandchildren, gone])
    do(log, project, DELETE, parents[:3])
    do(log, project, "bulk_permanent_delete_records", [gone])
    first, row = do(log, project, UNDELETE, [*grandchildren, gone, other], batch_size=10)
    assert (row.status, row.info["total"], row.info["failed"]) == ("done", 27, 26)
    assert sorted(kept(first)) == sorted([(g, "the parent is deleted") for g in grandchildren]
                                         + [(gone, "permanently deleted")])
    do(log, project, UNDELETE, parents[:3])  # the grandchildren stay deleted: their own
    assert all(records(project.gid)[g].status == "deleted" for g in grandchildren)

    again = retry(log, project, first)
    assert job_row(again).params == {"selection": [{"failures_of": first}]}
    assert job_row(again).job == UNDELETE
    outcomes = run_to_end(again, log, cfg(batch_size=10))
    row = job_row(again)
    assert outcomes[-1] == "done"
    assert row.info == {"total": 26, "remaining": 0, "failed": 1,
                        "errors": [{"gid": gone, "reason": "permanently deleted"}]}
    after = records(project.gid)
    assert all(after[g].status != "deleted" for g in grandchildren)
    assert sorted(entries(again, "undelete")) == sorted(after[g].id for g in grandchildren)


def test_retry_of_a_job_without_failures_unfinished_unknown_or_foreign_is_refused(
    log: SyncLog, seeded: SeedResult,
) -> None:
    """No failed item, not finished: Unprocessable; unknown, or of another project:
    NotFound; nothing is queued."""
    project, other = seeded.projects
    clean, row = do(log, project, DELETE, live_grandchildren(project, 2))
    assert row.info["failed"] == 0
    waiting = new_job(log, project, DELETE, live_grandchildren(project, 3)[2:])
    with get_engine().connect() as conn:
        before = conn.execute(select(func.count()).select_from(jobs_t)).scalar_one()
    for token, error in [(clean, Unprocessable), (waiting, Unprocessable),
                         ("no-such-job", NotFound)]:
        with pytest.raises(error):
            retry(log, project, token)
    with pytest.raises(NotFound):
        retry(log, other, clean)
    with get_engine().connect() as conn:
        assert conn.execute(select(func.count()).select_from(jobs_t)).scalar_one() == before


def test_failures_go_with_their_job_when_it_expires(log: SyncLog, project: SeededProject
                                                     ) -> None:
    """Retention removes a finished job's failure rows with it, in slices smaller than
    them, and counts the job once; a recent job keeps its own."""
    old, _ = do(log, project, DELETE, inside_deleted_head(project, 25))
    recent, _ = do(log, project, DELETE, inside_deleted_head(project, 3))
    with get_write_engine().begin() as conn:
        conn.execute(update(jobs_t).where(jobs_t.c.token == old).values(finished_on=1.0))
    assert expire_finished(get_write_engine(), before=time.time() - 3600, limit=4) == 1
    assert kept(old) == [] and len(kept(recent)) == 3
    with get_engine().connect() as conn:
        assert conn.execute(select(jobs_t.c.token)).scalars().all() == [recent]


def test_paging_and_retry_read_a_jobs_failures_along_their_index(
    log: SyncLog, project: SeededProject,
) -> None:
    """With 40,000 failure rows of 400 jobs analysed, a page of one job's failures reads
    that job's range of ix_job_failure_job_token_id in its order (no scan, no sort), and no
    statement of a retry's resolution (records, schema items, tombstones) scans the
    failures or reads a project-wide range of records.  The statistics go with the rows
    afterwards."""
    from models.failures import page
    from models.resolve import resolve_into
    from models.selection import parse_selection
    from tests.plans import captured, violations
    from worker.jobs.records import add_tombstoned

    rows: list[dict[str, Any]] = [{"job_token": f"job-{j:04d}", "gid": f"g-{i}", "reason": "x"}
                                  for j in range(400) for i in range(100)]
    with get_write_engine().begin() as conn:
        conn.execute(failures_t.insert(), rows)
    try:
        with get_write_engine().connect() as conn:
            conn.execute(text("ANALYZE job_failure"))
            conn.commit()
        engine = get_engine()
        with captured(engine) as cap, engine.connect() as conn:
            assert len(page(conn, "job-0200", after=0, size=50)) == 50
            for kind in ("records", "schema"):
                selection = parse_selection([{"failures_of": "job-0200"}], kind=kind,
                                            internal=True)
                resolve_into(conn, token="probe", project_gid=project.gid,
                             selection=selection, mode="deleted")
            add_tombstoned(conn, "probe", project.gid, selection)
            conn.rollback()
        cap.statements = [(sql, p) for sql, p in cap.statements if "job_failure" in sql]
        assert len(cap.statements) == 4
        with engine.connect() as conn:
            assert violations(conn, cap, big=frozenset({"job_failure"})) == []
            sql, params = cap.statements[0]  # the page
            explain = "EXPLAIN " if conn.dialect.name == "postgresql" else "EXPLAIN QUERY PLAN "
            plan = str(conn.exec_driver_sql(explain + sql, params).all())
            assert "ix_job_failure_job_token_id" in plan, plan
            assert "Sort" not in plan and "TEMP B-TREE" not in plan, plan
    finally:
        with get_write_engine().begin() as conn:
            conn.execute(text("DELETE FROM job_failure"))
            if conn.dialect.name == "sqlite":
                conn.execute(text("DELETE FROM sqlite_stat1 WHERE tbl = 'job_failure'"))
            else:
                conn.execute(text("ANALYZE job_failure"))
