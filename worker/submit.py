"""Queueing jobs: validate, write the job rows, announce them, send the tasks.

The selection is parsed (:func:`check`) before anything is written, so a malformed one is
rejected with :class:`~bulkjobs.errors.SelectionError` and nothing is queued; so are
parameters whose stored JSON would be larger than :data:`MAX_PARAMS_BYTES`.  Jobs queued
together (:func:`submit_each`) share one transaction and one sync-log round trip.

A job's ``queued`` event goes through the sync outbox (:mod:`models.outbox`): its outbox row
commits with the job row, and the submitter appends it right after the commit, under a
once-key named after the row.  A process dying in between, or an append whose reply was
lost, leaves the row behind: the job's run appends it before anything else, and the reaper
appends it meanwhile — once, whoever does it, so there is never a job without its event nor
an event without its job.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import delete, insert, select, update

from bulkjobs import keys
from bulkjobs.errors import BadRequest, BulkJobsError, Conflict, NotFound, PayloadTooLarge
from bulkjobs.synclog import SyncLog
from models.engine import get_engine, get_write_engine
from models.idempotency import HEADER, Reservation, attach
from models.jobs import CANCELLED, PROCESSING, QUEUED, Job
from models.outbox import JOB_EVENT, SyncOutbox
from models.pauses import is_paused
from models.selection import Selection, parse_selection
from models.selection_store import dump
from worker.deps import Deps
from worker.jobs import CATALOGUE
from worker.progress import JobState, append_states_once
from worker.rows import load
from worker.terminal import reject

jobs = Job.__table__
outbox = SyncOutbox.__table__
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
    #: The request's idempotency key, reserved (:mod:`models.idempotency`).
    reservation: Reservation | None = None
    #: Made by the product, not taken from a client: its selection may hold internal
    #: entries (a retry's, :mod:`worker.rerun`).
    internal: bool = False
    #: ``params['selection']`` as :func:`check` parsed it, stored with the job
    #: (:mod:`models.selection_store`) so that its runs need not parse it again.
    selection: Selection | None = None


def check(job: str, params: dict[str, Any], *, internal: bool = False) -> Selection:
    """The parsed selection of a submission of ``job`` with ``params``, or the client error
    it gets, before anything is written: an unknown job (:class:`BadRequest`), parameters
    larger than :data:`MAX_PARAMS_BYTES` (:class:`PayloadTooLarge`) or a malformed selection
    (:class:`~bulkjobs.errors.SelectionError`; internal entries only when ``internal``)."""
    spec = CATALOGUE.get(job)
    if spec is None:
        raise BadRequest(f"unknown job {job!r}")
    size = len(json.dumps(params))  # ASCII: characters are bytes
    if size > MAX_PARAMS_BYTES:
        raise PayloadTooLarge(f"Job parameters too large: {size} bytes stored, at most "
                              f"{MAX_PARAMS_BYTES}", info={"size": size,
                                                           "limit": MAX_PARAMS_BYTES})
    return parse_selection(params.get("selection"), kind=spec.kind, internal=internal)


def checked(submission: Submission) -> Submission:
    """``submission`` with its selection parsed (:func:`check`, whose errors it raises)."""
    if submission.selection is not None:
        return submission
    return replace(submission, selection=check(submission.job, submission.params,
                                               internal=submission.internal))


def submit(
    *, project_gid: str, job: str, params: dict[str, Any], actor: dict[str, Any],
    log: SyncLog, enqueue: Callable[[str], None],
) -> str:
    """Queue ``job`` over ``params['selection']``; returns the job token."""
    submission = checked(Submission(project_gid, job, params, actor))
    return submit_many([submission], log=log,
                       enqueue=lambda tokens: enqueue(tokens[0]))[0]


def submit_many(
    submissions: Sequence[Submission], *, log: SyncLog,
    enqueue: Callable[[Sequence[str]], None], clear_outbox: bool = True,
) -> list[str]:
    """:func:`submit_each`, raising the first submission's error, if any."""
    tokens = submit_each(submissions, log=log, enqueue=enqueue, clear_outbox=clear_outbox)
    for token in tokens:
        if isinstance(token, BulkJobsError):
            raise token
    return [str(token) for token in tokens]


def submit_each(
    submissions: Sequence[Submission], *, log: SyncLog,
    enqueue: Callable[[Sequence[str]], None], clear_outbox: bool = True,
) -> list[str | Conflict]:
    r"""Queue submissions together; their tokens, in order.  Each is :func:`checked` first
    (already, by the web's queueing), and its parsed selection is stored with its job.

    One transaction writes every job row with its ``queued`` event's outbox row, one
    sync-log round trip appends those events (:func:`append_queued`), then their tokens are
    handed to ``enqueue`` for their Celery messages (:func:`send`).  The commit and the round
    trip are shared, so a web process that gathers concurrent requests into one call
    (:mod:`api.queueing`) pays them once for all of them.

    A submission with an idempotency key's reservation names its job on the key in the
    same transaction (:func:`models.idempotency.attach`), so the key names the job as soon
    as the job exists.  One whose reservation was taken over meanwhile (as abandoned) writes
    no job: its place in the answer is a :class:`~bulkjobs.errors.Conflict`.

    Redis must answer first (one ``PING``): while it is away nothing is written and the
    error is raised (the dialects answer 503, nothing queued; the job could not start
    anyway, as the broker is Redis too by default).  Once the rows are committed the jobs
    stand: should the append still fail (Redis gone in between, or its reply lost), the
    events stay in the outbox for the jobs' runs or the reaper, and the tokens are answered
    all the same (an error would make the client queue them twice).  The appended outbox
    rows are deleted later, off the answer's path (:data:`APPENDED`): at once with
    ``clear_outbox``, else by whoever calls :meth:`Appended.clear` (the web's sending
    thread)."""
    if not submissions:
        return []
    log.r.ping()  # Redis away: nothing is written (see above)
    submissions = [checked(s) for s in submissions]
    now = time.time()
    tokens = [str(uuid.uuid4()) for _ in submissions]
    keyed = [i for i, s in enumerate(submissions) if s.reservation is not None]
    with get_write_engine().begin() as conn:
        held = attach(conn, [submissions[i].reservation for i in keyed],  # type: ignore[misc]
                      [tokens[i] for i in keyed])
        lost = {i for i, still in zip(keyed, held, strict=True) if not still}
        kept = [(token, s) for i, (token, s) in enumerate(zip(tokens, submissions, strict=True))
                if i not in lost]
        if kept:
            conn.execute(insert(jobs), [
                {"token": token, "project_gid": s.project_gid, "job": s.job, "status": QUEUED,
                 "info": {}, "params": s.params, "actor": s.actor, "created_on": now,
                 "selection": dump(s.selection),  # type: ignore[arg-type]
                 "updated_on": now, "heartbeat_on": now}
                for token, s in kept])
            ids = conn.execute(
                insert(outbox).returning(outbox.c.id, sort_by_parameter_order=True), [
                    {"job_token": token, "project_gid": s.project_gid, "data_type": JOB_EVENT,
                     "action": QUEUED, "gids": token, "created_on": now}
                    for token, s in kept]).scalars().all()
    if not kept:
        return [taken_over() for _ in submissions]
    states = [JobState(token, s.project_gid, s.job, QUEUED, {}, now, now) for token, s in kept]
    if append_queued(log, list(zip(ids, states, strict=True))):
        APPENDED.add(ids)
        if clear_outbox:
            APPENDED.clear()
    for token, s in kept:
        logger.info("job %s: queued (%s in project %s)", token, s.job, s.project_gid,
                    extra={"job": token})
    send([token for token, _ in kept], enqueue)
    return [taken_over() if i in lost else token for i, token in enumerate(tokens)]


def taken_over() -> Conflict:
    """The answer of a submission whose idempotency key was taken over by a retry."""
    return Conflict(f"A retry with this {HEADER} is being handled; retry later",
                    info={"header": HEADER})


def append_queued(log: SyncLog, rows: Sequence[tuple[int, JobState]]) -> bool:
    """Append the ``queued`` events of outbox rows ``(row id, job state)``, each under its
    row's once-key, in one round trip.  An append whose reply was lost is tried once more
    at once: what had gone through is not appended again.  ``False`` when Redis stays away:
    the rows stay in the outbox, for the jobs' runs or the reaper."""
    calls = [(state, keys.outbox_appended(row_id, 0)) for row_id, state in rows]
    for attempt in (1, 2):
        try:
            append_states_once(log, calls, insert=True)
            return True
        except Exception:
            logger.warning("queued events of %d job(s) not appended (attempt %d); they stay "
                           "in the outbox", len(rows), attempt, exc_info=True)
    return False


class Appended:
    """Ids of outbox rows whose events this process appended and has yet to delete (a row
    left behind only costs its job's run or the reaper an append that adds nothing)."""

    def __init__(self) -> None:
        self._ids: list[int] = []
        self._lock = threading.Lock()

    def add(self, ids: Sequence[int]) -> None:
        with self._lock:
            self._ids.extend(ids)

    def clear(self) -> None:
        """Delete the rows gathered so far, in one transaction."""
        with self._lock:
            ids, self._ids = self._ids, []
        if not ids:
            return
        try:
            with get_write_engine().begin() as conn:
                conn.execute(delete(outbox).where(outbox.c.id.in_(ids)))
        except Exception:
            logger.warning("%d appended outbox row(s) not deleted; their jobs' runs or the "
                           "reaper will", len(ids), exc_info=True)


APPENDED = Appended()


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
    """Ask a job to stop after its current batch; a job no run holds that has not started,
    or whose project is paused (:mod:`worker.pausing`), ends at once."""
    engine = get_engine()
    with get_write_engine().begin() as conn:
        row = load(conn, token)
        if row is None or row.project_gid != project_gid:
            raise NotFound("no such job")
        waiting = False
        if row.status in (QUEUED, PROCESSING):
            conn.execute(update(jobs).where(jobs.c.token == token).values(cancel_requested=True))
            logger.info("job %s: cancel requested", token, extra={"job": token})
            waiting = row.owner is None and (row.status == QUEUED
                                             or is_paused(conn, row.project_gid))
    if waiting:
        reject(token, deps=Deps.default(log, heartbeat=False), error=CANCELLED)
    with engine.connect() as conn:
        return dict(conn.execute(select(jobs).where(jobs.c.token == token)).one()._mapping)
