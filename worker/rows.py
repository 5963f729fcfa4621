"""The job row as the lifecycle reads it: typed, and only the columns it needs.

:func:`load` reads what a run, a cancel or an announcement needs once (:class:`JobRow`,
with the selection in ``params`` and the ``actor``); :func:`load_state` what the batch loop
and the heartbeat read again and again (:class:`StateRow`, without ``params`` and ``actor``:
a large selection's text would otherwise be read and decoded twice a batch).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from sqlalchemy import Connection, bindparam, select

from models.jobs import Job
from worker.progress import JobState

jobs = Job.__table__


@dataclass(frozen=True, slots=True)
class JobRow:
    """The job row as read once per run (:func:`load`)."""

    token: str
    project_gid: str
    job: str
    status: str
    info: dict[str, Any]
    created_on: float
    updated_on: float
    owner: str | None
    resolved: bool
    cancel_requested: bool
    announced: bool
    params: dict[str, Any]
    actor: dict[str, Any]
    attempts: int


@dataclass(frozen=True, slots=True)
class StateRow:
    """The job row as the batch loop and the heartbeat read it (:func:`load_state`)."""

    token: str
    project_gid: str
    job: str
    status: str
    info: dict[str, Any]
    created_on: float
    updated_on: float
    owner: str | None
    position: int
    cancel_requested: bool
    result_status: int | None
    result_payload: dict[str, Any] | None


# Built once: a run reads the job row several times, and building a statement of a dozen
# columns (and its cache key) costs more than running it.
_BY_TOKEN = jobs.c.token == bindparam("token")
#: The columns of a :class:`JobRow` and of a :class:`StateRow`, in their fields' order (also
#: for an UPDATE that returns the row it wrote, :func:`worker.lease.claim_row`).
ROW_COLUMNS = tuple(jobs.c[f.name] for f in fields(JobRow))
STATE_COLUMNS = tuple(jobs.c[f.name] for f in fields(StateRow))
_LOAD = select(*ROW_COLUMNS).where(_BY_TOKEN)
_LOAD_STATE = select(*STATE_COLUMNS).where(_BY_TOKEN)


def load(conn: Connection, token: str) -> JobRow | None:
    row = conn.execute(_LOAD, {"token": token}).first()
    return None if row is None else JobRow(*row)


def load_state(conn: Connection, token: str) -> StateRow | None:
    """The job row without ``params`` and ``actor``, which a run reads once."""
    row = conn.execute(_LOAD_STATE, {"token": token}).first()
    return None if row is None else StateRow(*row)


def state_of(row: JobRow | StateRow, *, info: dict[str, Any] | None = None) -> JobState:
    """The row's state (its sync event's data); ``info`` in place of the row's, if given."""
    return JobState(
        token=row.token, project_gid=row.project_gid, job=row.job, status=row.status,
        info=dict(row.info or {}) if info is None else info, created_on=row.created_on,
        updated_on=row.updated_on,
    )
