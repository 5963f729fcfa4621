"""Jobs: the durable truth about every job, and the items a job resolved its selection to.

A job resolves its selection once into ``job_item`` rows (ordered by ``id``) and then works
through them in batches; ``position`` is the last ``job_item.id`` whose batch committed, and it
is written in the same transaction as the batch.  ``owner`` + ``heartbeat_on`` form a lease: a
worker may only commit while it holds the lease, and the reaper re-queues jobs whose heartbeat
stopped.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import (
    JSON,
    Column,
    Connection,
    Engine,
    Index,
    UniqueConstraint,
    bindparam,
    delete,
    select,
)
from sqlalchemy.orm import defer
from sqlmodel import Field, SQLModel

from bulkjobs.statuses import (  # noqa: F401  (re-exported)
    CANCELLED,
    DONE,
    PROCESSING,
    QUEUED,
    REJECTED,
    TERMINAL,
    UNFINISHED,
    JobStatus,
)
from models.engine import in_slices
from models.failures import delete_some as delete_failures
from models.outbox import SyncOutbox


class Job(SQLModel, table=True):
    __table_args__ = (Index("ix_job_status_heartbeat", "status", "heartbeat_on"),
                      Index("ix_job_project_created", "project_gid", "created_on", "token"),
                      # a project's jobs of one status in the order they were queued: the
                      # first job in line (worker.lease.first_in_line) without walking the
                      # project's finished jobs
                      Index("ix_job_project_status_created", "project_gid", "status",
                            "created_on", "token"),
                      Index("ix_job_status_finished", "status", "finished_on"),
                      Index("ix_job_token_prefix", "token",
                            postgresql_ops={"token": "varchar_pattern_ops"}))

    token: str = Field(primary_key=True, max_length=36)
    project_gid: str = Field(foreign_key="project.gid", max_length=36, index=True)
    job: str
    status: str = QUEUED
    info: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))
    params: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))
    # ``params['selection']`` as parsed at submit (models.selection_store); null on rows of
    # older versions, whose runs parse ``params`` instead.
    selection: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    actor: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))
    created_on: float = 0.0
    updated_on: float = 0.0
    started_on: float | None = None
    finished_on: float | None = None
    heartbeat_on: float = 0.0
    attempts: int = 0  # claims (each slice, re-queue or retry claims the job anew)
    failures: int = 0  # runs that raised unexpectedly (SPEC §6: retried up to 3 times)
    owner: str | None = None
    resolved: bool = False
    position: int = 0
    cancel_requested: bool = False
    announced: bool = False  # the terminal event has been appended to the sync log
    result_status: int | None = None
    result_payload: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))

    def public(self) -> dict[str, Any]:
        """The job as its sync event's ``data`` shows it."""
        return {name: getattr(self, name) for name in PUBLIC_FIELDS}


#: The columns of a job's public state (its sync event's ``data``), besides its token.
PUBLIC_FIELDS = ("project_gid", "job", "status", "info", "created_on", "updated_on")


def public_state(row: Mapping[str, Any]) -> dict[str, Any]:
    """A job row read as a mapping, as the API answers it: its token and public state."""
    return {"token": row["token"], **{name: row[name] for name in PUBLIC_FIELDS}}


#: Loader options for job rows read for their public state (:meth:`Job.public`): the
#: selection (``params``, up to 8 MiB, and its parsed form), the actor and a result's
#: payload stay in the database.  Reading them would cost every listed job its selection's
#: text, decoded.
PUBLIC_ONLY = tuple(defer(getattr(Job, name))
                    for name in ("params", "selection", "actor", "result_payload"))


class JobItem(SQLModel, table=True):
    __tablename__ = "job_item"
    # (job_token, id): a job's next batch is one range of this index.
    __table_args__ = (UniqueConstraint("job_token", "item_id"),
                      Index("ix_job_item_job_token_id", "job_token", "id"))

    id: int | None = Field(default=None, primary_key=True)
    job_token: str = Field(max_length=36)
    item_id: int


class ReadToken(SQLModel, table=True):
    """Whom a ``records/bulk/get`` read token (its ``job_item`` rows) was made for: its page
    cursor is honoured only on that project's route and for that user."""

    __tablename__ = "read_token"

    token: str = Field(primary_key=True, max_length=36)
    project_gid: str = Field(max_length=36)
    user_gid: str = Field(max_length=36)


def expire_finished(engine: Engine, *, before: float, limit: int = 1000) -> int:
    """Remove the jobs that finished before ``before`` (epoch seconds), with their failed
    items (:mod:`models.failures`) and any outbox rows still naming them, in short write
    transactions (:func:`models.engine.in_slices`: writers waiting their turn go in
    between); returns how many jobs went.  Each slice finds its jobs along
    ``ix_job_status_finished``, one range per terminal status; a slice that finds a slice's
    worth of their failed items deletes only those, and the jobs go with a later slice."""
    table = Job.__table__
    outbox = SyncOutbox.__table__
    tokens = bindparam("tokens", expanding=True)
    removed = 0

    def step(conn: Connection, n: int) -> int:
        nonlocal removed
        found: list[str] = []
        for status in TERMINAL:  # two index ranges, not an OR the planners would scan
            found += conn.execute(
                select(table.c.token).where(table.c.status == status,
                                            table.c.finished_on < before)
                .limit(n - len(found))).scalars().all()
            if len(found) >= n:
                break
        if found:
            if delete_failures(conn, found, n) >= n:
                return n  # more failed items may be left: the jobs go with a later slice
            conn.execute(delete(outbox).where(outbox.c.job_token.in_(tokens)), {"tokens": found})
            conn.execute(delete(JobItem.__table__).where(
                JobItem.__table__.c.job_token.in_(tokens)), {"tokens": found})
            conn.execute(delete(table).where(table.c.token.in_(tokens)), {"tokens": found})
            removed += len(found)
        return len(found)

    in_slices(engine, step, limit=limit)
    return removed
