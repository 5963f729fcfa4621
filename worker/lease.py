"""The job's lease: who may run it and commit its progress (the SQL on the job row).

* **Lease.** A run first *claims* the job (``owner`` + fresh ``heartbeat_on``); a claim
  succeeds only when nobody holds a live lease.  Every batch commits with
  ``WHERE owner = <me>`` (:func:`commit`), so a run that lost its lease (the reaper gave the
  job to another worker) can never commit again (:class:`LeaseLost`).
* **One run per lease.**  Every run leases the job under a name of its own
  (:func:`new_owner`), and a claim succeeds only when nobody holds a live lease: a message
  delivered twice, or re-sent while its first run is alive, finds the job leased and hands
  back without touching anything.
* **Paused.** A job of a paused project is not claimed (:mod:`worker.pausing`).
* **Order.** Jobs of one project are claimed in the order they were queued
  (:func:`first_in_line`); on PostgreSQL a claim passes over a job another claim is taking
  at that moment instead of waiting for it (:func:`first_unstarted`).
* **Statements** are built once, here, with bind parameters: building an UPDATE of the job
  row and its cache key costs several times what running it costs, and a small job runs
  each of them once.
* **Terminal.** :func:`finish` commits the terminal status and ``finished_on`` (while holding
  the lease); the announcement follows (:mod:`worker.terminal`).
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from typing import Any, TypeVar

from sqlalchemy import Connection, bindparam, exists, or_, select, update

from models.jobs import PROCESSING, QUEUED, Job
from models.pauses import EVERY_PROJECT, JobPause
from worker.deps import Deps
from worker.rows import ROW_COLUMNS, STATE_COLUMNS, JobRow, StateRow

jobs = Job.__table__
pauses = JobPause.__table__

#: The job's project is not paused (:mod:`models.pauses`), checked in the claim itself.
_NOT_PAUSED = ~exists().where(or_(pauses.c.scope == jobs.c.project_gid,
                                  pauses.c.scope == EVERY_PROJECT))


class LeaseLost(Exception):
    """The job was handed to another worker; this run must stop without committing."""


def new_owner() -> str:
    """A lease owner for one run: unique per run (host, process and a random part), never
    per message or per worker process, so that a message delivered twice — or its copy the
    reaper sent — cannot take over the lease of a run of the same job that is still alive."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4()}"


#: Nobody holds the job's lease, its holder stopped heart-beating (``stale_before``), or it
#: is held by ``takeover`` (the failed run whose retry this is; ``None``: nobody's).
_CLAIMABLE = or_(jobs.c.owner.is_(None), jobs.c.heartbeat_on < bindparam("stale_before"),
                 jobs.c.owner == bindparam("takeover"))
_TOKEN = jobs.c.token == bindparam("b_token")
#: The claim returns the claimed row and its stored selection (what the run starts from).
_CLAIM = update(jobs).where(
    _TOKEN, jobs.c.status.in_((QUEUED, PROCESSING)), _CLAIMABLE, _NOT_PAUSED,
).values(owner=bindparam("b_owner"), heartbeat_on=bindparam("now"),
         attempts=jobs.c.attempts + 1).returning(*ROW_COLUMNS, jobs.c.selection)
_IN_LINE = select(jobs.c.project_gid, jobs.c.status, jobs.c.owner, jobs.c.heartbeat_on,
                  jobs.c.attempts).where(_TOKEN)
_UNSTARTED = select(jobs.c.token).where(
    jobs.c.status == QUEUED, jobs.c.project_gid == bindparam("project_gid"),
    jobs.c.attempts == 0, jobs.c.owner.is_(None), jobs.c.cancel_requested.is_(False),
).order_by(jobs.c.created_on, jobs.c.token).limit(1)
#: The same, passing over rows another transaction holds (PostgreSQL; SQLite has no row
#: locks, and runs one writer at a time).
_UNSTARTED_UNCLAIMED = _UNSTARTED.with_for_update(skip_locked=True)
#: The SET clause of :func:`commit` comes from the keys of its parameters.
_COMMIT = update(jobs).where(_TOKEN, jobs.c.owner == bindparam("b_owner"))
_COMMIT_RETURNING = {JobRow: _COMMIT.returning(*ROW_COLUMNS),
                     StateRow: _COMMIT.returning(*STATE_COLUMNS)}
_RELEASE = update(jobs).where(_TOKEN, jobs.c.owner == bindparam("b_owner")).values(owner=None)
#: The terminal state, returning the finished row (its terminal event's data).
_FINISH = update(jobs).where(_TOKEN, jobs.c.status.in_((QUEUED, PROCESSING)))
_FINISH_OWNED = _FINISH.where(jobs.c.owner == bindparam("b_owner")).returning(*STATE_COLUMNS)
_FINISH = _FINISH.returning(*STATE_COLUMNS)


def claim(conn: Connection, token: str, owner: str, *, stale_after: float,
          takeover: str | None = None) -> bool:
    """Take the job's lease for the run ``owner``: only when nobody holds a live one (see
    :data:`_CLAIMABLE`) and its project's jobs are not paused (:mod:`worker.pausing`).  A
    live run's lease is never shared, whoever asks."""
    return claim_row(conn, token, owner, stale_after=stale_after, takeover=takeover) is not None


def claim_row(conn: Connection, token: str, owner: str, *, stale_after: float,
            takeover: str | None = None) -> tuple[JobRow, Any] | None:
    """:func:`claim`, returning the claimed row and, until the job is resolved, its stored
    selection (else ``None``), from the claim's own statement (``UPDATE … RETURNING``);
    ``None`` when the lease was not taken."""
    now = time.time()
    row = conn.execute(_CLAIM, {"b_token": token, "stale_before": now - stale_after,
                                "takeover": takeover, "b_owner": owner, "now": now}).first()
    if row is None:
        return None
    job = JobRow(*row[:-1])
    return job, (None if job.resolved else row[-1])


def first_in_line(conn: Connection, token: str, *, stale_after: float,
                  takeover: str | None = None) -> str:
    """The job a run for ``token`` should claim: ``token`` itself when that job has started
    before (a slice, a retry, a stale lease); otherwise — it has not started, or it cannot be
    claimed (finished, leased by a live run) — the oldest job of its project that has not
    started yet, when there is one.

    A job's message is a ticket for the next job of its project, so that jobs of one project
    start in the order they were queued whatever order their messages come in (two web
    processes sending at once, two worker processes taking messages at once, a message sent
    again by the reaper).  Every job has a message, and each message starts at most the one
    job first in line, so every job is started; a message that finds its job started by
    another one starts the next in line instead.  Jobs of other projects are not held up."""
    row = conn.execute(_IN_LINE, {"b_token": token}).first()
    if row is None:
        return token
    if (row.status in (QUEUED, PROCESSING) and row.attempts > 0
            and claimable(row, stale_after=stale_after, takeover=takeover)):
        return token
    return first_unstarted(conn, row.project_gid, unclaimed=True) or token


def claimable(row: Any, *, stale_after: float, takeover: str | None = None) -> bool:
    """A job row's lease (its ``owner`` and ``heartbeat_on``) may be taken: nobody holds it,
    its holder stopped heart-beating, or it is ``takeover``'s — :data:`_CLAIMABLE` read off
    a row already loaded."""
    return (row.owner is None or row.heartbeat_on < time.time() - stale_after
            or (takeover is not None and row.owner == takeover))


def first_unstarted(conn: Connection, project_gid: str, *, unclaimed: bool = False
                    ) -> str | None:
    """The oldest job of the project that no run has started (nor asked to cancel), if any.

    ``unclaimed`` (for a claim, in its write transaction): on PostgreSQL, the oldest such
    job whose row no other transaction holds, locked for this one (``FOR UPDATE SKIP
    LOCKED``).  Runs that look for the next job at the same moment — pool processes
    following the line (:mod:`worker.follow`), messages taken at once — then claim
    consecutive jobs side by side instead of all waiting on the first one's row lock, to
    find it taken when the other claim commits.  So jobs of one project are *claimed* in
    queue order; two claims in flight at once may commit in either order.  Never in a
    read-only look (the lock would turn claims away until that transaction ends)."""
    stmt = _UNSTARTED_UNCLAIMED if unclaimed else _UNSTARTED
    return conn.execute(stmt, {"project_gid": project_gid}).scalar()


def commit(conn: Connection, token: str, owner: str, values: dict[str, Any]) -> None:
    """Write ``values`` on the job row while ``owner`` holds the lease; :class:`LeaseLost`
    when it does not any more."""
    result = conn.execute(_COMMIT, {"b_token": token, "b_owner": owner, **values})
    if result.rowcount != 1:
        raise LeaseLost(token)


Row = TypeVar("Row", JobRow, StateRow)


def commit_row(conn: Connection, token: str, owner: str, values: dict[str, Any],
               shape: type[Row]) -> Row:
    """:func:`commit`, and the row as it wrote it (``UPDATE … RETURNING``), as a
    :class:`~worker.rows.JobRow` or :class:`~worker.rows.StateRow` (``shape``): no read of
    its own after the write, and nothing another transaction changed in between is missed
    (the row is this transaction's until it ends)."""
    row = conn.execute(_COMMIT_RETURNING[shape],
                       {"b_token": token, "b_owner": owner, **values}).first()
    if row is None:
        raise LeaseLost(token)
    return shape(*row)


def release(deps: Deps, token: str, owner: str) -> None:
    """Hand the job back (at shutdown: another worker need not wait for the reaper)."""
    with deps.write_engine.begin() as conn:
        conn.execute(_RELEASE, {"b_token": token, "b_owner": owner})


def finish(
    conn: Connection, token: str, *, status: str, info: dict[str, Any], owner: str | None,
    result_status: int | None = None, result_payload: dict[str, Any] | None = None,
) -> StateRow | None:
    """Commit a terminal state (only while holding the lease, when ``owner`` is given); the
    finished row (``UPDATE … RETURNING``), or ``None`` when the job was not this run's to
    finish.  The job's ``job_item`` rows are deleted by the caller in the same transaction
    when they are few, else afterwards, in slices, by :func:`worker.terminal.announce`."""
    now = time.time()
    values: dict[str, Any] = dict(b_token=token, status=status, info=info, updated_on=now,
                                  finished_on=now, owner=None)
    if result_status is not None:
        values.update(result_status=result_status, result_payload=result_payload)
    stmt, params = (_FINISH, values) if owner is None else (_FINISH_OWNED,
                                                            {**values, "b_owner": owner})
    row = conn.execute(stmt, params).first()
    return None if row is None else StateRow(*row)
