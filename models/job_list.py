"""Jobs listed newest first, a page at a time (``jobs/list`` and ``bulkjobs jobs list``):
optionally only those of one project, status or kind, created in a time range, or whose
token starts with a prefix.

Rows are read for their public state only (:data:`models.jobs.PUBLIC_ONLY`).  A page ends
with the cursor of the next one: the last row's ``(created_on, token)``, the listing's order,
so jobs created meanwhile neither repeat nor shift a page."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session
from sqlmodel import col

from bulkjobs import cursors
from models.jobs import PUBLIC_ONLY, Job


def page(session: Session, *, project_gid: str | None = None, status: str | None = None,
         job: str | None = None, token_prefix: str | None = None,
         created_after: float | None = None, created_before: float | None = None,
         page_cursor: str | None = None, page_size: int = 100) -> tuple[list[Job], str | None]:
    """A page of at most ``page_size`` jobs, newest first, and the cursor of the next page
    (None after the last).  ``created_after`` is inclusive, ``created_before`` exclusive;
    ``project_gid`` None lists every project's.  Raises :class:`~bulkjobs.errors.BadRequest`
    for a cursor that does not decode."""
    query = select(Job).options(*PUBLIC_ONLY)
    if project_gid is not None:
        query = query.where(col(Job.project_gid) == project_gid)
    if status:
        query = query.where(col(Job.status) == status)
    if job is not None:
        query = query.where(col(Job.job) == job)
    if token_prefix:
        query = query.where(col(Job.token).startswith(token_prefix, autoescape=True))
    if created_after is not None:
        query = query.where(col(Job.created_on) >= created_after)
    if created_before is not None:
        query = query.where(col(Job.created_on) < created_before)
    if page_cursor:
        created_on, token = cursors.decode(page_cursor, (float, str))
        query = query.where((col(Job.created_on) < created_on) |
                            ((col(Job.created_on) == created_on) & (col(Job.token) < token)))
    rows = list(session.execute(
        query.order_by(col(Job.created_on).desc(), col(Job.token).desc()).limit(page_size + 1)
    ).scalars())
    found = rows[:page_size]
    cursor = (cursors.encode([found[-1].created_on, found[-1].token])
              if len(rows) > page_size else None)
    return found, cursor
