"""Single-record edits by a route (``records/delete``, ``records/undelete``): a record batch
function run over one record outside any job."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection

from models.editing import find
from worker.jobs.base import Context, Failure


def edit_one(conn: Connection, batch: Any, *, project_gid: str, gid: str,
             actor: dict[str, Any], now: float) -> Failure | None:
    """Run a record batch function (:func:`worker.jobs.records.delete_batch`,
    :func:`~worker.jobs.records.undelete_batch`) over one record outside any job: its
    failure, if any.  An unknown record is :class:`~bulkjobs.errors.Unprocessable`."""
    row = find(conn, project_gid, gid, live=False)
    failures = batch(conn, Context.single_edit(project_gid=project_gid, actor=actor, now=now),
                     [row.id])
    return failures[0] if failures else None
