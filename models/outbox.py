"""The sync outbox: project-space events of committed batches that are not yet in the log.

A job's batch writes the events it owes (``records`` and schema ``UPDATE``/``DELETE``/
``INSERT`` per changed gid, SPEC §7) into ``sync_outbox`` in the same transaction as the
batch, so they commit together or not at all.  The runner appends them after the commit and
deletes the rows once appended; rows left behind (Redis failed, the worker died) are appended
by the job's next run, before its terminal event, or by the reaper.  Each part of a row is
appended under a once-key named after the row's id, so a row appended again (a crash between
the append and the delete) adds nothing: every event is in the log exactly once.  Row ids
are therefore never reused (SQLite ``AUTOINCREMENT``; PostgreSQL's sequence never goes
back).

One row per batch and (data type, action): the gids of that group as one space-separated
text, so that a batch of 100,000 changed rows costs one insert of a few megabytes, not
100,000 inserts.

A job's ``queued`` event goes the same way: its row (``data_type`` :data:`JOB_EVENT`,
``action`` ``queued``, ``gids`` the job's token) commits with the job row, so there is never
a job without its event nor an event without its job; the event is rebuilt from the job row
when appended (:func:`worker.outbox.drain_outbox`).
"""

from __future__ import annotations

from sqlalchemy import Column, Text
from sqlmodel import Field, SQLModel

#: ``data_type`` of the row holding a job's own event (in the ``cc`` space), not a project's.
JOB_EVENT = "job"


class SyncOutbox(SQLModel, table=True):
    __tablename__ = "sync_outbox"
    __table_args__ = {"sqlite_autoincrement": True}

    id: int | None = Field(default=None, primary_key=True)
    job_token: str = Field(max_length=36, index=True)
    project_gid: str = Field(max_length=36)
    # records, definitions, classes, fields, layouts; or JOB_EVENT
    data_type: str = Field(max_length=32)
    action: str = Field(max_length=8)  # INSERT, UPDATE or DELETE; a JOB_EVENT's status
    gids: str = Field(sa_column=Column(Text, nullable=False))  # space-separated
    created_on: float = 0.0
