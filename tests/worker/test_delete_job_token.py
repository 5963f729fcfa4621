"""A bulk delete knows its own deletions by its token in ``workflow_entry.job_token``: a
record the job deleted with a selected ancestor counts as done (in whichever batch it
comes), while a record inside a subtree that a single-record delete (no token) deleted
earlier is "already deleted" and gets no entry."""

from __future__ import annotations

import time

from sqlalchemy import text

from bulkjobs.synclog import SyncLog
from models.engine import get_engine, get_write_engine
from models.seed import SeededProject
from tests.worker.helpers import children, do, records
from worker.jobs.base import Context
from worker.jobs.records import delete_batch

DELETE = "bulk_delete_records"


def _entries(record_ids: list[int]) -> list[tuple[int, str | None]]:
    with get_engine().connect() as conn:
        return [tuple(r) for r in conn.execute(text(
            "SELECT record_id, job_token FROM workflow_entry WHERE action = 'delete' "
            f"AND record_id IN ({', '.join(map(str, record_ids))}) ORDER BY id"))]


def test_a_jobs_entries_carry_its_token(log: SyncLog, project: SeededProject):
    """A head and a record inside it, in batches of one: both succeed, and both delete
    entries carry the job's token."""
    recs = records(project.gid)
    head = project.heads[2]
    inner = children(recs, head)[0]
    token, row = do(log, project, DELETE, [head, inner], batch_size=1)
    assert row.info["failed"] == 0
    assert sorted(_entries([recs[head].id, recs[inner].id])) == sorted(
        [(recs[head].id, token), (recs[inner].id, token)])


def test_inside_a_single_deletes_subtree_is_already_deleted(log: SyncLog,
                                                            project: SeededProject):
    """After a single-record delete of a head (as ``records/delete`` does it), a bulk delete
    of a record inside it fails per item with "already deleted" and writes no entry."""
    recs = records(project.gid)
    head = project.heads[4]
    inner = children(recs, head)[0]
    with get_write_engine().begin() as conn:
        ctx = Context.single_edit(project_gid=project.gid, actor={}, now=time.time())
        assert delete_batch(conn, ctx, [recs[head].id]) == []
    assert _entries([recs[head].id, recs[inner].id]) == [(recs[head].id, None)]
    _, row = do(log, project, DELETE, [inner], batch_size=1)
    assert row.info["failed"] == 1
    assert [(e["gid"], e["reason"]) for e in row.info["errors"]] == [(inner, "already deleted")]
    assert _entries([recs[head].id, recs[inner].id]) == [(recs[head].id, None)]
