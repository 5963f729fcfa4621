"""The reaper: the safety net under Celery.

A job whose worker died (SIGKILL, lost machine) stops heart-beating.  The reaper hands such
jobs back (``owner = NULL``) and re-queues them; the job resumes at its first uncommitted
batch.  Jobs waiting for a message — queued, or processing but handed back (a slice re-queued
itself, a retry is due) — are re-queued after ``queued_stale_after`` (their message was lost,
say by a broker that lost its data), and only when the broker no longer holds their message:
as a Celery or Sidekiq user expects, a job waiting in a long backlog keeps its one place in
line and is not sent again every ``queued_stale_after``.  A job's ``heartbeat_on`` is when
its message was sent (queued, handed back, re-queued), every message carries the time it was
sent, and the broker's queue is first in, first out; so a job whose message went out after
the oldest message still waiting (:func:`worker.app.oldest_waiting`, less
:data:`SENT_MARGIN`) is still in line.  Each re-queue bumps ``heartbeat_on``, so a job is
re-queued at most once per staleness period however many reapers run.

Jobs of paused projects (:mod:`worker.pausing`) are left alone: they wait for resume, which
sends their messages.

A job's ``queued`` event left in the outbox (the web process died, or Redis was away, right
after the job's row committed) is appended before the job could be re-queued.

Finished jobs whose terminal event is missing are announced; finished jobs that still have
events in the sync outbox (their last run could not append them) get those appended.
Unfinished jobs' outbox rows are left to the job's next run, which appends them first.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from sqlalchemy import and_, false, or_, select, update

from bulkjobs.synclog import SyncLog
from models.jobs import DONE, PROCESSING, QUEUED, REJECTED, Job
from models.outbox import JOB_EVENT, SyncOutbox
from models.pauses import EVERY_PROJECT, paused_scopes
from worker.deps import Deps
from worker.outbox import drain_outbox
from worker.terminal import announce

logger = logging.getLogger(__name__)
jobs = Job.__table__
outbox = SyncOutbox.__table__


#: Seconds a message may go out after its job's ``heartbeat_on`` was set (the commit before
#: the send; clocks of different hosts): a job is taken to be still in line when its
#: heartbeat is at most this much older than the oldest message waiting.
SENT_MARGIN = 30.0
#: Seconds the submitter has to append a job's ``queued`` event before the reaper does.
QUEUED_EVENT_GRACE = 5.0
#: Seconds a finished job's run has to append its terminal event and mark it announced
#: (:mod:`worker.announced`) before the reaper does.
ANNOUNCE_GRACE = 5.0


def reap(
    *, log: SyncLog, stale_after: float, queued_stale_after: float,
    requeue: Callable[[str], None], limit: int = 1000,
    oldest_waiting: Callable[[], float | None] | None = None,
) -> list[str]:
    """One pass.  ``oldest_waiting``: when the oldest message still waiting in the broker's
    jobs queue was sent (``None``: the queue is empty); without it, waiting jobs are
    re-sent after ``queued_stale_after`` whatever the broker holds."""
    now = time.time()
    waiting = or_(jobs.c.status == QUEUED,
                  and_(jobs.c.status == PROCESSING, jobs.c.owner.is_(None)))
    resend_before = now - queued_stale_after
    oldest = oldest_waiting() if oldest_waiting is not None else None
    if oldest is not None:  # messages sent since are still in line
        resend_before = min(resend_before, oldest - SENT_MARGIN)
    stale = or_(
        and_(jobs.c.status == PROCESSING, jobs.c.owner.is_not(None),
             jobs.c.heartbeat_on < now - stale_after),
        and_(waiting, jobs.c.heartbeat_on < resend_before),
    )
    deps = Deps.default(log)
    engine = deps.engine
    with engine.connect() as conn:
        unappended = [r[0] for r in conn.execute(
            select(outbox.c.job_token).distinct().where(
                outbox.c.data_type == JOB_EVENT, outbox.c.created_on < now - QUEUED_EVENT_GRACE,
            ).limit(limit)
        )]
    for token in unappended:  # before the job is re-queued: its queued event comes first
        drain_outbox(deps, token, job_events_only=True)
    with engine.connect() as conn:
        paused = paused_scopes(conn)
        if paused:  # their jobs wait for resume
            stale = and_(stale, false() if EVERY_PROJECT in paused
                         else jobs.c.project_gid.not_in(sorted(paused)))
        tokens = [r[0] for r in conn.execute(select(jobs.c.token).where(stale).limit(limit))]
        unannounced = [r[0] for r in conn.execute(
            select(jobs.c.token).where(
                jobs.c.status.in_((DONE, REJECTED)), jobs.c.announced.is_(False),
                jobs.c.finished_on < now - ANNOUNCE_GRACE,
            ).limit(limit)
        )]
        undrained = [r[0] for r in conn.execute(
            select(outbox.c.job_token).distinct().join(jobs, jobs.c.token == outbox.c.job_token)
            .where(jobs.c.status.in_((DONE, REJECTED)), jobs.c.announced.is_(True))
            .limit(limit)
        )]
    requeued = []
    for token in tokens:
        with deps.write_engine.begin() as conn:
            taken = conn.execute(update(jobs).where(jobs.c.token == token, stale)
                                 .values(owner=None, heartbeat_on=now)).rowcount
        if taken:
            logger.warning("job %s: heartbeat stopped, re-queued", token, extra={"job": token})
            requeue(token)
            requeued.append(token)
    for token in unannounced:
        announce(deps, token)  # appends the job's outbox first
    for token in undrained:
        drain_outbox(deps, token)
    return requeued
