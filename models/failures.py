"""Failed items: every item a job could not process, with its reason, kept after the job.

``info.errors`` holds the first 20 failures only, and a job's ``job_item`` rows are deleted
when it finishes; so each batch also writes its failures into ``job_failure``, in the same
transaction as the batch (:func:`keep`).  A batch committed twice over the same items (its
position put back) adds nothing: a job keeps one row per failed gid, the first reason.

The rows are read a page at a time in the order they were written (:func:`page`, one range
of ``ix_job_failure_job_token_id``), serve a retry of exactly those items (the internal
selection entry :class:`models.selection.Failed`), and go with their job when the job is
removed (:func:`models.jobs.expire_finished`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import Column, Connection, Index, Text, UniqueConstraint, bindparam, text
from sqlmodel import Field, SQLModel

#: The most rows one page of failures may hold.
MAX_PAGE = 1000


class JobFailure(SQLModel, table=True):
    __tablename__ = "job_failure"
    # (job_token, gid): one row per failed item of a job; (job_token, id): a job's
    # failures in the order they were written, one index range per page.
    __table_args__ = (UniqueConstraint("job_token", "gid"),
                      Index("ix_job_failure_job_token_id", "job_token", "id"))

    id: int | None = Field(default=None, primary_key=True)
    job_token: str = Field(max_length=36)
    gid: str = Field(max_length=64)
    reason: str = Field(sa_column=Column(Text, nullable=False))


_KEEP = text("INSERT INTO job_failure (job_token, gid, reason) VALUES (:tok, :gid, :reason) "
             "ON CONFLICT (job_token, gid) DO NOTHING")


def keep(conn: Connection, token: str, failures: Iterable[Any]) -> None:
    """Write a batch's failures (objects with ``gid`` and ``reason``) for job ``token``, in
    the caller's transaction; a gid the job kept before is left as it is."""
    rows = [{"tok": token, "gid": f.gid, "reason": f.reason} for f in failures]
    if rows:
        conn.execute(_KEEP, rows)


def page(conn: Connection, token: str, *, after: int = 0, size: int = 100
         ) -> list[tuple[int, str, str]]:
    """The failures of ``token`` written after row ``after``, at most ``size`` of them, as
    ``(id, gid, reason)`` in the order they were written."""
    return [tuple(r) for r in conn.execute(text(  # type: ignore[misc]
        "SELECT id, gid, reason FROM job_failure WHERE job_token = :tok AND id > :after "
        "ORDER BY id LIMIT :n"), {"tok": token, "after": after, "n": size}).all()]


def any_kept(conn: Connection, token: str) -> bool:
    """Whether job ``token`` kept a failed item."""
    return conn.execute(text("SELECT 1 FROM job_failure WHERE job_token = :tok LIMIT 1"),
                        {"tok": token}).first() is not None


def delete_some(conn: Connection, tokens: Sequence[str], limit: int) -> int:
    """Delete at most ``limit`` failure rows of the jobs ``tokens``; returns how many."""
    if not tokens:
        return 0
    return int(conn.execute(text(
        "DELETE FROM job_failure WHERE id IN (SELECT id FROM job_failure "
        "WHERE job_token IN :tokens LIMIT :n)"
    ).bindparams(bindparam("tokens", expanding=True)),
        {"tokens": list(tokens), "n": limit}).rowcount)
