"""The reaper: the safety net under Celery.

A job whose worker died (SIGKILL, lost machine) stops heart-beating.  The reaper hands such
jobs back (``owner = NULL``) and re-queues them; the job resumes at its first uncommitted
batch.  Jobs waiting for a message — queued, or processing but handed back (a slice re-queued
itself, a retry is due) — are re-queued after ``queued_stale_after`` (their message was lost,
say by a broker that lost its data): a backlog that keeps a sliced job waiting longer than
``stale_after`` must not earn it a second message.  Each re-queue bumps ``heartbeat_on``, so
a job is re-queued at most once per staleness period however many reapers run.

Finished jobs whose terminal event is missing are announced; finished jobs that still have
events in the sync outbox (their last run could not append them) get those appended.
Unfinished jobs' outbox rows are left to the job's next run, which appends them first.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from sqlalchemy import and_, or_, select, update

from bulkjobs.synclog import SyncLog
from models.engine import get_engine, get_write_engine
from models.jobs import DONE, PROCESSING, QUEUED, REJECTED, Job
from models.outbox import SyncOutbox
from worker.runner import announce, drain_outbox

logger = logging.getLogger(__name__)
jobs = Job.__table__
outbox = SyncOutbox.__table__


def reap(
    *, log: SyncLog, stale_after: float, queued_stale_after: float,
    requeue: Callable[[str], None], limit: int = 1000,
) -> list[str]:
    now = time.time()
    waiting = or_(jobs.c.status == QUEUED,
                  and_(jobs.c.status == PROCESSING, jobs.c.owner.is_(None)))
    stale = or_(
        and_(jobs.c.status == PROCESSING, jobs.c.owner.is_not(None),
             jobs.c.heartbeat_on < now - stale_after),
        and_(waiting, jobs.c.heartbeat_on < now - queued_stale_after),
    )
    engine = get_engine()
    with engine.connect() as conn:
        tokens = [r[0] for r in conn.execute(select(jobs.c.token).where(stale).limit(limit))]
        unannounced = [r[0] for r in conn.execute(
            select(jobs.c.token).where(
                jobs.c.status.in_((DONE, REJECTED)), jobs.c.announced.is_(False),
                jobs.c.finished_on < now - 5,
            ).limit(limit)
        )]
        undrained = [r[0] for r in conn.execute(
            select(outbox.c.job_token).distinct().join(jobs, jobs.c.token == outbox.c.job_token)
            .where(jobs.c.status.in_((DONE, REJECTED)), jobs.c.announced.is_(True))
            .limit(limit)
        )]
    requeued = []
    for token in tokens:
        with get_write_engine().begin() as conn:
            taken = conn.execute(update(jobs).where(jobs.c.token == token, stale)
                                 .values(owner=None, heartbeat_on=now)).rowcount
        if taken:
            logger.warning("job %s: heartbeat stopped, re-queued", token, extra={"job": token})
            requeue(token)
            requeued.append(token)
    for token in unannounced:
        announce(log, token)  # appends the job's outbox first
    for token in undrained:
        drain_outbox(log, token)
    return requeued
