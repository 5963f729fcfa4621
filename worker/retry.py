"""What a run does when it fails: retry, back off, or reject.

* **Failures.** A run that raises unexpectedly hands the job back and counts the failure on
  the job row (``failures``), not in the broker: the count survives lost messages and dead
  workers.  Below ``max_retries`` the caller retries after a back-off (:class:`RetryLater`);
  the job's heartbeat is pushed past the back-off so that the reaper does not re-queue it
  meanwhile.  Beyond it the job is rejected with ``info.error`` (:func:`failed`).  Deadlocks
  and serialisation failures of a batch are retried in place first (:func:`retrying`: they
  are not the job's fault).
* **The database or Redis away.** A database that cannot be reached, drops the connection,
  or stays locked past its busy timeout, and Redis refusing connections, timing out or
  loading its data — on the outbox's append, a progress event, the terminal event or a
  re-queue — (:func:`unavailable`) is not the job's fault either: the run
  hands the job back without counting a failure and retries after a back-off, for as long
  as it takes.  Should even the hand-back fail, the error goes to the task, which retries it
  the same way; the retry carries the failed run's lease name (``takeover``) and takes the
  job back at once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import NoReturn, TypeVar

import kombu.exceptions
import redis.exceptions
from sqlalchemy import select, update
from sqlalchemy.exc import DBAPIError

from bulkjobs.errors import public_message
from models.jobs import REJECTED, Job
from worker.deps import Deps, RunConfig
from worker.terminal import reject

# The job lifecycle logs under one name, whichever of its modules writes the line.
logger = logging.getLogger("worker.runner")

T = TypeVar("T")

#: Attempts at one batch that hit a deadlock or serialisation failure.
TRANSIENT_TRIES = 4
#: The longest wait (seconds) between runs of a job while its database is away.
OUTAGE_RETRY_MAX = 30
#: Redis (the sync log, or the broker behind kombu) not answering, refusing connections, or
#: loading its data after a restart (``BusyLoadingError`` is a ``ConnectionError``).
REDIS_AWAY = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError,
              kombu.exceptions.OperationalError)
jobs = Job.__table__


class RetryLater(Exception):
    """The run raised unexpectedly; the job was handed back and should run again after
    ``countdown`` seconds (it has failed ``failures`` times, fewer than the limit).  With
    ``outage`` the database was away (no failure counted) and the caller, which knows how
    many times in a row that happened, may wait longer."""

    def __init__(self, token: str, failures: int, countdown: int, *,
                 outage: bool = False) -> None:
        super().__init__(f"job {token} failed {failures} time(s); retry in {countdown} s")
        self.token, self.failures, self.countdown = token, failures, countdown
        self.outage = outage


def backoff(failures: int) -> int:
    """Seconds before the retry that follows the ``failures``-th failure: 1, 2, 4, … ≤ 30."""
    return min(OUTAGE_RETRY_MAX, 2 ** max(0, failures - 1))


def unavailable(exc: BaseException) -> bool:
    """The database could not be reached, lost the connection, or stayed locked past its
    busy timeout, or Redis did not answer: errors of the moment, not of the job."""
    if isinstance(exc, REDIS_AWAY):
        return True
    if not isinstance(exc, DBAPIError):
        return False
    if exc.connection_invalidated or isinstance(exc.orig, ConnectionError):
        return True
    state = str(getattr(exc.orig, "sqlstate", "") or "")
    if state.startswith("08") or state in ("57P01", "57P02", "57P03", "53300"):
        return True  # connection exceptions, server shutting down or starting, too many
    message = str(exc.orig)
    return any(text in message for text in ("database is locked", "unable to open database",
                                            "server closed the connection"))


def retrying(token: str, step: Callable[[], T]) -> T:
    """``step()``, tried again (up to :data:`TRANSIENT_TRIES` times) when the database reports
    a deadlock or serialisation failure: its transaction was rolled back whole, and such
    errors come from concurrent jobs, not from this one."""
    for n in range(TRANSIENT_TRIES):
        try:
            return step()
        except DBAPIError as exc:
            if n == TRANSIENT_TRIES - 1 or not _transient(exc):
                raise
            logger.warning("job %s: transient database error, batch retried: %s", token, exc,
                           extra={"job": token})
            time.sleep(0.05 * 2 ** n)
    raise AssertionError("unreachable")


def _transient(exc: BaseException) -> bool:
    """Deadlock or serialisation failure (PostgreSQL), or a busy SQLite database."""
    if not isinstance(exc, DBAPIError):
        return False
    state = getattr(exc.orig, "sqlstate", None)
    return state in ("40001", "40P01") or "database is locked" in str(exc.orig)


def failed(deps: Deps, token: str, owner: str, exc: Exception, *, cfg: RunConfig) -> str:
    """The run ``owner`` raised ``exc``: hand the job back and raise :class:`RetryLater`, or
    reject the job past ``cfg.max_retries`` failures (returns ``rejected``).  Re-raises
    ``exc`` when the run no longer held the job (finished, or taken over): nothing to
    retry."""
    if unavailable(exc):
        _wait_for_services(deps, token, owner, exc)
    failures = _count_failure(deps, token, owner)
    if failures is None:  # not ours any more (finished, or taken over): nothing to retry
        raise exc
    error = public_message(exc)  # no SQL, parameters or stack text in info.error
    if failures > cfg.max_retries:
        logger.error("job %s failed %s times, rejecting: %s", token, failures, exc,
                     exc_info=True, extra={"job": token})
        reject(token, deps=deps, error=error)
        return REJECTED
    countdown = backoff(failures)
    logger.warning("job %s failed (%s), retry %s in %s s", token, exc, failures, countdown,
                   exc_info=True, extra={"job": token})
    _push_heartbeat(deps, token, countdown)
    raise RetryLater(token, failures, countdown) from exc


def _wait_for_services(deps: Deps, token: str, owner: str, exc: Exception) -> NoReturn:
    """The database or Redis is away: hand the job back uncounted and ask for a retry
    (:class:`RetryLater` with ``outage`` set: the caller picks the back-off from its own
    count of attempts)."""
    with deps.write_engine.begin() as conn:  # raises while the database is still away
        failures = conn.execute(update(jobs).where(jobs.c.token == token, jobs.c.owner == owner)
                                .values(owner=None).returning(jobs.c.failures)).scalar()
    if failures is None:  # not ours any more: nothing to retry
        raise exc
    logger.warning("job %s: database or Redis unavailable (%s), handed back for a retry",
                   token, exc, extra={"job": token})
    _push_heartbeat(deps, token, OUTAGE_RETRY_MAX)
    raise RetryLater(token, int(failures), 1, outage=True) from exc


def _count_failure(deps: Deps, token: str, owner: str) -> int | None:
    """Hand the job back and count one failure; ``None`` when this run no longer held it."""
    with deps.write_engine.begin() as conn:
        taken = conn.execute(update(jobs).where(jobs.c.token == token, jobs.c.owner == owner)
                             .values(owner=None, failures=jobs.c.failures + 1)).rowcount
        if taken != 1:
            return None
        return int(conn.execute(select(jobs.c.failures).where(jobs.c.token == token))
                   .scalar_one())


def _push_heartbeat(deps: Deps, token: str, countdown: int) -> None:
    # The retry message is due in ``countdown`` seconds; until then the job is not stale, so
    # the reaper does not start a second line of retries beside it.  Should the message be
    # lost, the reaper re-queues the job ``stale_after`` seconds after it was due.
    with deps.write_engine.begin() as conn:
        conn.execute(update(jobs).where(jobs.c.token == token, jobs.c.owner.is_(None))
                     .values(heartbeat_on=time.time() + countdown))
