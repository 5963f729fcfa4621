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
        batch_size=s.batch_size, progress_interval=s.progress_interval,
        heartbeat_interval=s.heartbeat_interval, stale_after=s.stale_after,
        slice_seconds=s.slice_seconds,
    )


@app.task(name="bulkjobs.run_job", bind=True, max_retries=3)
def run_job(self, token: str) -> str:  # type: ignore[no-untyped-def]
    """Run (a slice of) one job; unexpected errors are retried with back-off, then the job is
    rejected with ``info.error``."""
    try:
        return runner.run(token, log=get_synclog(), cfg=run_config(), requeue=enqueue)
    except Exception as exc:
        if self.request.retries >= self.max_retries:
            logger.error("job %s failed %s times, rejecting", token, self.request.retries + 1)
            runner.reject(token, log=get_synclog(), error=f"{type(exc).__name__}: {exc}")
            return runner.REJECTED
        logger.warning("job %s raised %r, retrying", token, exc)
        raise self.retry(exc=exc, countdown=min(30, 2 ** self.request.retries)) from exc


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
