"""Celery tasks: thin adapters that take a job token and call plain functions."""

from __future__ import annotations

import logging

from bulkjobs.connections import get_synclog
from bulkjobs.settings import get_settings
from worker import reaper, runner
from worker.app import app, enqueue

logger = logging.getLogger(__name__)


def run_config() -> runner.RunConfig:
    s = get_settings()
    return runner.RunConfig(
        # On SQLite batches are sized to take tens of milliseconds (BATCH_SIZE the upper
        # bound), so that writers taking turns wait little; PostgreSQL locks rows only.
        batch_size=s.batch_size, adaptive_batches=s.is_sqlite,
        progress_interval=s.progress_interval,
        heartbeat_interval=s.heartbeat_interval, stale_after=s.stale_after,
        slice_seconds=s.slice_seconds, record_events=s.record_events,
    )


@app.task(name="bulkjobs.run_job", bind=True, max_retries=3)
def run_job(self, token: str) -> str:  # type: ignore[no-untyped-def]
    """Run (a slice of) one job.

    A job that raises is retried with back-off and rejected with ``info.error`` after
    ``max_retries`` retries; the count lives on the job row (:class:`runner.RetryLater`), so
    it holds across lost messages and dead workers.  Errors outside the job's own work (the
    database or Redis unreachable before the job could even be claimed) are retried by Celery
    with the same back-off (without end while the database is away); should those retries run
    out, the reaper re-queues the job."""
    # The lease is named after the message: a retry of this message (same task id) takes
    # the job back even when the failed run could not hand it back (the database was away).
    owner = f"task-{self.request.id}" if self.request.id else None
    try:
        return runner.run(token, log=get_synclog(), cfg=run_config(), requeue=enqueue,
                          owner=owner)
    except runner.RetryLater as later:
        # The limit is the job row's failure count (the runner rejects beyond it), not
        # Celery's per-message count: always allow this retry.  While the database is away
        # the wait grows with the retries of this message.
        countdown = (runner.backoff(self.request.retries + 1) if later.outage
                     else later.countdown)
        raise self.retry(countdown=countdown, max_retries=self.request.retries + 1) from later
    except Exception as exc:
        logger.warning("job %s: %r before it could run, retrying", token, exc,
                       extra={"job": token})
        # The database away: retry for as long as it takes (the job is not at fault).
        limit = self.request.retries + 1 if runner.unavailable(exc) else self.max_retries
        raise self.retry(exc=exc, countdown=runner.backoff(self.request.retries + 1),
                         max_retries=limit) from exc


@app.task(name="bulkjobs.reap")
def reap() -> int:
    """Re-queue jobs whose heartbeat stopped; announce finished jobs that were not."""
    s = get_settings()
    return len(reaper.reap(log=get_synclog(), stale_after=s.stale_after,
                           queued_stale_after=s.queued_stale_after, requeue=enqueue))


@app.task(name="bulkjobs.trim")
def trim() -> None:
    """Apply the sync log's retention to every space."""
    s = get_settings()
    log = get_synclog()
    for space in log.spaces():
        log.trim(space, keep=s.sync_retention, keep_seconds=s.sync_retention_seconds)
