"""Queueing a job: validate, write the job row, announce it, send the task.

The selection is parsed here, before anything is written, so a malformed one is rejected
with :class:`~bulkjobs.errors.SelectionError` and nothing is queued.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

from sqlalchemy import delete, insert, update

from bulkjobs.errors import BadRequest, NotFound
from bulkjobs.synclog import SyncLog
from models.engine import get_engine, get_write_engine
from models.jobs import PROCESSING, QUEUED, Job
from models.selection import parse_selection
from worker.jobs import CATALOGUE
from worker.progress import JobState, append_state
from worker.runner import load, reject

jobs = Job.__table__
logger = logging.getLogger(__name__)


def submit(
    *, project_gid: str, job: str, params: dict[str, Any], actor: dict[str, Any],
    log: SyncLog, enqueue: Callable[[str], None],
) -> str:
    """Queue ``job`` over ``params['selection']``; returns the job token."""
    spec = CATALOGUE.get(job)
    if spec is None:
        raise BadRequest(f"unknown job {job!r}")
    parse_selection(params.get("selection"), kind=spec.kind)
    token = str(uuid.uuid4())
    now = time.time()
    with get_write_engine().begin() as conn:
        conn.execute(insert(jobs).values(
            token=token, project_gid=project_gid, job=job, status=QUEUED, info={},
            params=params, actor=actor, created_on=now, updated_on=now, heartbeat_on=now,
        ))
    try:
        append_state(log, JobState(token, project_gid, job, QUEUED, {}, now, now), insert=True)
    except Exception:
        # The sync log (Redis) is down: the caller answers 503, so the job must not run later
        # (the reaper would re-queue a queued row).  Nobody has seen its token yet.
        with get_write_engine().begin() as conn:
            conn.execute(delete(jobs).where(jobs.c.token == token))
        raise
    try:
        enqueue(token)
    except Exception:
        # Queued and announced, so the job stands; the reaper sends queued jobs whose message
        # never arrived (after QUEUED_STALE_AFTER).  Answering an error here would make the
        # client queue it twice.
        logger.warning("job %s: the broker refused its message; the reaper will re-send it",
                       token, exc_info=True, extra={"job": token})
    logger.info("job %s: queued (%s in project %s)", token, job, project_gid,
                extra={"job": token})
    return token


def cancel(*, project_gid: str, token: str, log: SyncLog) -> dict[str, Any]:
    """Ask a job to stop after its current batch; a job nobody has started ends at once."""
    engine = get_engine()
    with get_write_engine().begin() as conn:
        row = load(conn, token)
        if row is None or row.project_gid != project_gid:
            raise NotFound("no such job")
        if row.status in (QUEUED, PROCESSING):
            conn.execute(update(jobs).where(jobs.c.token == token).values(cancel_requested=True))
            logger.info("job %s: cancel requested", token, extra={"job": token})
    if row.status == QUEUED and row.owner is None:
        reject(token, log=log, error="cancelled")
    with engine.connect() as conn:
        return dict(load(conn, token)._mapping)
