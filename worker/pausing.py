"""Pausing and resuming jobs, per project or every project at once (:mod:`models.pauses`).

* **Pause** writes the pause row and nothing else: each job sees it itself.  A running job
  reads it before each batch (:mod:`worker.batches`) and stops after the batch in hand
  (:func:`stop`): its lease is handed back uncounted (no failure, no retry), nothing is
  re-queued, and its sync event says ``info.paused: true`` with its status unchanged.  A job
  whose message arrives meanwhile (queued, or between two slices) is not claimed
  (:func:`worker.lease.claim` refuses it) and says the same (:func:`hold`); its message is
  used up.  The reaper leaves the jobs of paused projects alone.
* **Resume** (:func:`resume`) deletes the row, then sends the message of every unfinished
  job of the scope that no run holds (its heartbeat bumped as the reaper does, so that the
  reaper does not send it again), and a ``info.paused: false`` event for each job that had
  said it was paused.  A job resumes where it stopped: its next batch is its first
  uncommitted one.
* **Races.**  A run hands its lease back *before* it reads the pause once more, and resume
  deletes the row *before* it looks for jobs no run holds: so a job stopped while resume ran
  is sent again by one of the two (or both: a second message finds the job leased or
  finished and does nothing).  A run that claims a job still marked paused clears the mark
  (:func:`unmark`).
* **Cancel** of a paused job rejects it at once (:func:`worker.submit.cancel`), as for a
  job nobody has started.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import Connection, and_, select, update

from models.jobs import UNFINISHED, Job
from models.pauses import EVERY_PROJECT, is_paused, pause, paused_scopes, unpause
from worker.deps import Deps
from worker.progress import JobState, append_state, append_states
from worker.rows import load_state, state_of
from worker.submit import send

logger = logging.getLogger("worker.runner")
jobs = Job.__table__

#: The key of ``info`` that says a job is paused (true) or was resumed (false, in the
#: resume event only; the job row then drops it).
PAUSED = "paused"


def pause_jobs(deps: Deps, scope: str, *, by: str) -> bool:
    """Pause the jobs of a project (``scope`` its gid) or of every project
    (:data:`models.pauses.EVERY_PROJECT`); ``False`` when it was paused already."""
    with deps.write_engine.begin() as conn:
        paused = pause(conn, scope, by=by)
    if paused:
        logger.info("jobs of %s paused", _name(scope))
    return paused


def resume(deps: Deps, scope: str, *, enqueue: Callable[[Sequence[str]], None]) -> list[str]:
    """Lift the pause of ``scope`` and send the messages of its jobs that wait for one (none
    while another pause still holds them: the one of every project, or the project's own);
    returns their tokens.  A message the broker refuses is sent by the reaper later
    (:func:`worker.submit.send`)."""
    with deps.write_engine.begin() as conn:
        lifted = unpause(conn, scope)
    if lifted:
        logger.info("jobs of %s resumed", _name(scope))
    with deps.engine.connect() as conn:
        still = paused_scopes(conn)
        if EVERY_PROJECT in still or scope in still:
            return []
        waiting = and_(jobs.c.status.in_(UNFINISHED), jobs.c.owner.is_(None))
        if scope != EVERY_PROJECT:
            waiting = and_(waiting, jobs.c.project_gid == scope)
        elif still:
            waiting = and_(waiting, jobs.c.project_gid.not_in(sorted(still)))
        tokens = list(conn.execute(select(jobs.c.token).where(waiting)
                                   .order_by(jobs.c.created_on, jobs.c.token)).scalars())
    resumed: list[JobState] = []
    for token in tokens:
        with deps.write_engine.begin() as conn:
            state = _unmark(conn, token, heartbeat_on=time.time())
        if state is not None:
            resumed.append(state)
    if resumed:
        append_states(deps.log, resumed)
    if tokens:
        send(tokens, enqueue)
    return tokens


def stopped(info: dict[str, Any]) -> dict[str, Any]:
    """``info`` of a job stopped by a pause (the runner commits it as it hands the lease
    back)."""
    return {**info, PAUSED: True}


def hold(deps: Deps, token: str) -> bool:
    """Whether a job that was not claimed waits because its project is paused (queued, or
    between two slices, and held by no run); it is marked and announced with
    ``info.paused: true`` the first time."""
    with deps.engine.connect() as conn:
        row = load_state(conn, token)
        if (row is None or row.status not in UNFINISHED or row.owner is not None
                or not is_paused(conn, row.project_gid)):
            return False
    if (row.info or {}).get(PAUSED):
        return True
    info = stopped(dict(row.info or {}))
    with deps.write_engine.begin() as conn:
        if not conn.execute(update(jobs).where(
                jobs.c.token == token, jobs.c.owner.is_(None), jobs.c.position == row.position,
                jobs.c.status == row.status,
        ).values(info=info)).rowcount:
            return False
    append_state(deps.log, state_of(row, info=info))
    logger.info("job %s: held, its project is paused", token, extra={"job": token})
    return True


def unmark(deps: Deps, token: str, owner: str) -> JobState | None:
    """Drop the paused mark of a job the run ``owner`` claimed, if it still has one (the job
    was resumed while its last run stopped); the state to announce (``info.paused:
    false``)."""
    with deps.write_engine.begin() as conn:
        return _unmark(conn, token, owner=owner)


def _unmark(conn: Connection, token: str, *, owner: str | None = None,
            heartbeat_on: float | None = None) -> JobState | None:
    """Drop the mark of a job held by ``owner`` (``None``: by no run), and bump its
    heartbeat when ``heartbeat_on`` is given; the state to announce (``info.paused: false``)
    when it had the mark.  Nothing is written when the job was claimed (or moved on) since it
    was read."""
    row = load_state(conn, token)
    if row is None or row.status not in UNFINISHED or row.owner != owner:
        return None
    info = dict(row.info or {})
    marked = info.pop(PAUSED, None) is not None
    values: dict[str, Any] = {}
    if marked:
        values["info"] = info
    if heartbeat_on is not None:
        values["heartbeat_on"] = heartbeat_on
    if not values:
        return None
    held = jobs.c.owner.is_(None) if owner is None else jobs.c.owner == owner
    written = conn.execute(update(jobs).where(
        jobs.c.token == token, held, jobs.c.position == row.position).values(**values)).rowcount
    return state_of(row, info={**info, PAUSED: False}) if marked and written else None


def _name(scope: str) -> str:
    return "every project" if scope == EVERY_PROJECT else f"project {scope}"
