"""Celery tasks: thin adapters that take a job token and call plain functions."""

from __future__ import annotations

import itertools
import logging
import time
from typing import Any

from celery.exceptions import Reject

from bulkjobs.connections import get_synclog
from bulkjobs.settings import get_settings
from models import idempotency, webhook_deliveries
from models.engine import get_write_engine
from models.jobs import DONE, REJECTED, expire_finished
from worker import reaper, runner
from worker.app import app, enqueue, oldest_waiting
from worker.deps import Deps, RunConfig
from worker.follow import follow
from worker.lease import new_owner
from worker.retry import RetryLater, backoff, unavailable

logger = logging.getLogger(__name__)

#: The longest a task keeps sending its retry while the broker is away (then the message
#: is dropped and the reaper re-sends the job).
RETRY_SEND_FOR = 600.0


def run_config() -> RunConfig:
    s = get_settings()
    return RunConfig(
        # On SQLite batches are sized to take tens of milliseconds (BATCH_SIZE the upper
        # bound), so that writers taking turns wait little; PostgreSQL locks rows only.
        batch_size=s.batch_size, adaptive_batches=s.is_sqlite,
        progress_interval=s.progress_interval,
        heartbeat_interval=s.heartbeat_interval, stale_after=s.stale_after,
        slice_seconds=s.slice_seconds, record_events=s.record_events,
        follow_seconds=s.follow_seconds,
    )


@app.task(name="bulkjobs.run_job", bind=True, max_retries=3)
def run_job(self, token: str, takeover: str | None = None) -> str:  # type: ignore[no-untyped-def]
    """Run (a slice of) one job.

    A job that raises is retried with back-off and rejected with ``info.error`` after
    ``max_retries`` retries; the count lives on the job row (:class:`worker.retry.RetryLater`), so
    it holds across lost messages and dead workers.  Errors outside the job's own work (the
    database or Redis unreachable before the job could even be claimed) are retried by Celery
    with the same back-off (without end while the database is away); should those retries run
    out, the reaper re-queues the job.

    Each run leases the job under a name of its own (:func:`worker.lease.new_owner`), so that the
    same message delivered twice never runs beside itself.  A retry sent because the run
    could not even hand the job back (the database or Redis away) carries that run's lease
    name as ``takeover`` and takes the job back at once; any other copy of a message waits
    for the lease to go stale.  A run that failed before it claimed the job (the database
    away again) passes on the lease name it was given: the job is still leased by that
    earlier run, however many retries find the database away in a row."""
    owner = new_owner()
    held = [takeover]  # the lease this message's runs may have left on the job

    def claimed() -> None:
        held[0] = owner

    deps, cfg = Deps.default(get_synclog()), run_config()
    try:
        outcome = runner.run(token, deps=deps, cfg=cfg, requeue=enqueue, owner=owner,
                             takeover=takeover, claimed=claimed)
    except RetryLater as later:
        # The limit is the job row's failure count (the runner rejects beyond it), not
        # Celery's per-message count: always allow this retry.  While the database is away
        # the wait grows with the retries of this message.
        countdown = (backoff(self.request.retries + 1) if later.outage
                     else later.countdown)
        raise _retry(self, kwargs={}, countdown=countdown,
                     max_retries=self.request.retries + 1) from later
    except Exception as exc:
        logger.warning("job %s: %r before it could run, retrying", token, exc,
                       extra={"job": token})
        # The database away: retry for as long as it takes (the job is not at fault).
        limit = self.request.retries + 1 if unavailable(exc) else self.max_retries
        # The run may have kept the lease (its hand-back failed too), or, failing before its
        # claim, left the earlier run's: the retry takes that one over.
        raise _retry(self, exc=exc, kwargs={"takeover": held[0]},
                     countdown=backoff(self.request.retries + 1),
                     max_retries=limit) from exc
    if outcome in (DONE, REJECTED):  # free: the next jobs in line need no message
        follow(token, deps=deps, cfg=cfg, requeue=enqueue,
               retry_later=lambda t, countdown: enqueue(t, countdown=countdown))
    return outcome


def _retry(task: Any, **options: Any) -> BaseException:
    """``task.retry(**options)``, whose new message is sent again and again (with back-off,
    up to :data:`RETRY_SEND_FOR` seconds) while the broker is away: Celery would otherwise
    drop this message with the retry unsent (``Reject``), and the job would wait for the
    reaper.  Meanwhile this message stays unacknowledged with the worker."""
    deadline = time.monotonic() + RETRY_SEND_FOR
    for n in itertools.count(1):
        try:
            return task.retry(**options)  # raises Retry once the message is sent
        except Reject as rejected:
            if not unavailable(rejected.reason) or time.monotonic() > deadline:
                raise
            logger.warning("the broker is away (%r); sending the retry again", rejected.reason)
            time.sleep(backoff(n))
    raise AssertionError("unreachable")


@app.task(name="bulkjobs.reap")
def reap() -> int:
    """Re-queue jobs whose heartbeat stopped or whose message the broker lost; announce
    finished jobs that were not."""
    s = get_settings()
    return len(reaper.reap(log=get_synclog(), stale_after=s.stale_after,
                           queued_stale_after=s.queued_stale_after, requeue=enqueue,
                           oldest_waiting=oldest_waiting))


@app.task(name="bulkjobs.trim")
def trim() -> None:
    """Apply the sync log's retention to every space."""
    s = get_settings()
    log = get_synclog()
    for space in log.spaces():
        log.trim(space, keep=s.sync_retention, keep_seconds=s.sync_retention_seconds)


@app.task(name="bulkjobs.expire_jobs")
def expire_jobs() -> int:
    """Remove the jobs that finished more than ``JOB_RETENTION_DAYS`` ago with the webhook
    deliveries made as long ago, and the idempotency keys older than 24 hours (hourly, by
    beat); how many jobs went."""
    now = time.time()
    expired = idempotency.expire(get_write_engine(), before=now - idempotency.TTL)
    if expired:
        logger.info("%d idempotency key(s) expired", expired)
    days = get_settings().job_retention_days
    deliveries = webhook_deliveries.expire(get_write_engine(), before=now - days * 86_400)
    if deliveries:
        logger.info("%d webhook deliveries expired", deliveries)
    return expire_finished(get_write_engine(), before=now - days * 86_400)
