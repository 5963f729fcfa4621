"""What a record job would take, without queueing it and without writing anything.

:func:`preview` resolves the selection exactly as the job's first run does — the same
statements into a ``job_item`` table, then the job's own prepare step (which orders the items
and, for undelete and permanent delete, adds the plain gids of permanently deleted records as
items that will fail) — but into a TEMP table that stands in for ``job_item`` on one
connection, inside a transaction that is rolled back.  So ``total`` is the ``total`` the job
would start with, and the database is left exactly as it was (on SQLite the read transaction
takes no write lock).

``entries`` counts, per selection entry, the records it adds after the entries before it
(duplicates count once, for the first entry that matches them; excludes are applied); the
gids of permanently deleted records that a job adds in its prepare step are in ``total``
only.  ``sample`` is the first 20 items in the order the job takes them.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, text

from bulkjobs.errors import BadRequest
from models.resolve import resolve_counted
from models.selection import Selection
from worker.jobs import CATALOGUE

#: The jobs a preview speaks of: ``records/bulk/<name>`` -> catalogue name.
PREVIEWED = {
    "delete": "bulk_delete_records",
    "undelete": "bulk_undelete_records",
    "permanent_delete": "bulk_permanent_delete_records",
}
SAMPLE = 20


@dataclass(frozen=True, slots=True)
class Preview:
    total: int
    entries: list[int]
    sample: list[str]

    def public(self) -> dict[str, Any]:
        return {"total": self.total, "entries": self.entries, "sample": self.sample}


def preview(engine: Engine, *, project_gid: str, job: str, selection: Selection) -> Preview:
    """What ``records/bulk/<job>`` of ``selection`` would take (see the module docstring);
    :class:`BadRequest` for a job it does not know."""
    if job not in PREVIEWED:
        raise BadRequest(f"job must be one of {', '.join(sorted(PREVIEWED))}",
                         info={"job": job})
    spec = CATALOGUE[PREVIEWED[job]]
    token = str(uuid.uuid4())
    conn = engine.connect()
    try:
        with conn.begin() as transaction:
            _stand_in_job_item(conn)
            entries = resolve_counted(conn, token=token, project_gid=project_gid,
                                      selection=selection, mode=spec.mode)
            if spec.prepare is not None:
                spec.prepare(conn, token, project_gid, selection)
            total = int(conn.execute(text(
                "SELECT COUNT(*) FROM job_item WHERE job_token = :t"), {"t": token}
            ).scalar_one())
            sample = list(conn.execute(text(
                "SELECT COALESCE((SELECT r.gid FROM record r WHERE r.id = ji.item_id), "
                "(SELECT t.gid FROM record_tombstone t WHERE t.id = -ji.item_id)) "
                "FROM job_item ji WHERE ji.job_token = :t ORDER BY ji.id LIMIT :n"
            ), {"t": token, "n": SAMPLE}).scalars())
            transaction.rollback()
    finally:
        conn.invalidate()  # the TEMP table must never outlive this on a pooled connection
        conn.close()
    return Preview(total=total, entries=entries, sample=sample)


def _stand_in_job_item(conn: Connection) -> None:
    """A TEMP ``job_item`` that unqualified names reach before the real one (both databases
    search the temporary schema first), dropped with the transaction."""
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(
            "CREATE TEMP TABLE job_item (id SERIAL PRIMARY KEY, job_token VARCHAR(36) NOT NULL, "
            "item_id INTEGER NOT NULL, UNIQUE (job_token, item_id)) ON COMMIT DROP")
    else:
        conn.exec_driver_sql(
            "CREATE TEMP TABLE job_item (id INTEGER PRIMARY KEY, job_token VARCHAR(36) NOT NULL, "
            "item_id INTEGER NOT NULL, UNIQUE (job_token, item_id))")
