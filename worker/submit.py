"""Queueing jobs: validate, write the job rows, announce them, send the tasks.

The selection is parsed (:func:`check`) before anything is written, so a malformed one is
rejected with :class:`~bulkjobs.errors.SelectionError` and nothing is queued; so are
parameters whose stored JSON would be larger than :data:`MAX_PARAMS_BYTES`.  Jobs queued
together (:func:`submit_many`) share one transaction and one sync-log append.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, insert, update

from bulkjobs.errors import BadRequest, NotFound, PayloadTooLarge
from bulkjobs.synclog import SyncLog
from models.engine import get_engine, get_write_engine
from models.jobs import PROCESSING, QUEUED, Job
from models.selection import parse_selection
from worker.jobs import CATALOGUE
from worker.progress import JobState, append_states
from worker.runner import load, reject

jobs = Job.__table__
logger = logging.getLogger(__name__)

#: The most a job's ``params`` may take as the JSON the database stores (``json.dumps``,
#: ASCII-escaped).  The largest documented selection — 100,000 plain gids and 10,000
#: children/search entries — takes about 5 MiB; request bodies are capped at 10 MB, but
#: escaping can make their stored text several times larger (``\uXXXX`` for each non-ASCII
#: character), and every reader of the job row would pay for it.
MAX_PARAMS_BYTES = 8 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Submission:
    """One job to queue: ``job`` over ``params['selection']`` in a project, for ``actor``."""

    project_gid: str
    job: str
    params: dict[str, Any]
    actor: dict[str, Any]


def check(job: str, params: dict[str, Any]) -> None:
    """Raise the client error a submission of ``job`` with ``params`` gets, before anything
    is written: an unknown job (:class:`BadRequest`), parameters larger than
    :data:`MAX_PARAMS_BYTES` (:class:`PayloadTooLarge`) or a malformed selection
    (:class:`~bulkjobs.errors.SelectionError`)."""
    spec = CATALOGUE.get(job)
    if spec is None:
        raise BadRequest(f"unknown job {job!r}")
    size = len(json.dumps(params))  # ASCII: characters are bytes
    if size > MAX_PARAMS_BYTES:
        raise PayloadTooLarge(f"Job parameters too large: {size} bytes stored, at most "
                              f"{MAX_PARAMS_BYTES}", info={"size": size,
                                                           "limit": MAX_PARAMS_BYTES})
    parse_selection(params.get("selection"), kind=spec.kind)


def submit(
    *, project_gid: str, job: str, params: dict[str, Any], actor: dict[str, Any],
    log: SyncLog, enqueue: Callable[[str], None],
) -> str:
    """Queue ``job`` over ``params['selection']``; returns the job token."""
    check(job, params)
    return submit_many([Submission(project_gid, job, params, actor)], log=log,
                       enqueue=lambda tokens: enqueue(tokens[0]))[0]


def submit_many(
    submissions: Sequence[Submission], *, log: SyncLog,
    enqueue: Callable[[Sequence[str]], None],
) -> list[str]:
    """Queue already :func:`check`\ ed submissions together; their tokens, in order.

    One transaction writes every job row, one sync-log append announces them all (each its
    own ``queued`` event), then their tokens are handed to ``enqueue`` for their Celery
    messages (:func:`send`).  The commit and the round trip are shared, so a web process that
    gathers concurrent requests into one call (:mod:`api.queueing`) pays them once for all
    of them."""
    if not submissions:
        return []
    now = time.time()
    tokens = [str(uuid.uuid4()) for _ in submissions]
    with get_write_engine().begin() as conn:
        conn.execute(insert(jobs), [
            {"token": token, "project_gid": s.project_gid, "job": s.job, "status": QUEUED,
             "info": {}, "params": s.params, "actor": s.actor, "created_on": now,
             "updated_on": now, "heartbeat_on": now}
            for token, s in zip(tokens, submissions, strict=True)])
    try:
        append_states(log, [JobState(token, s.project_gid, s.job, QUEUED, {}, now, now)
                            for token, s in zip(tokens, submissions, strict=True)], insert=True)
    except Exception:
        # The sync log (Redis) is down: the caller answers 503, so the jobs must not run later
        # (the reaper would re-queue a queued row).  Nobody has seen their tokens yet.
        with get_write_engine().begin() as conn:
            conn.execute(delete(jobs).where(jobs.c.token.in_(tokens)))
        raise
    for token, s in zip(tokens, submissions, strict=True):
        logger.info("job %s: queued (%s in project %s)", token, s.job, s.project_gid,
                    extra={"job": token})
    send(tokens, enqueue)
    return tokens


def send(tokens: Sequence[str], enqueue: Callable[[Sequence[str]], None]) -> None:
    """Send queued jobs' Celery messages.  A refusal is logged, not raised: the jobs are
    queued and announced, so they stand, and the reaper sends queued jobs whose message never
    arrived (after QUEUED_STALE_AFTER); answering an error would make the client queue them
    twice."""
    try:
        enqueue(tokens)
    except Exception:
        for token in tokens:
            logger.warning("job %s: the broker refused its message; the reaper will re-send "
                           "it", token, exc_info=True, extra={"job": token})


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
