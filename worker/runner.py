"""Running one job: claim, resolve, work through batches, finish.

Crash safety rests on the job row, not on the broker:

* **Lease.** A run first *claims* the job (``owner`` + fresh ``heartbeat_on``); a claim
  succeeds only when nobody holds a live lease.  Every batch commits with
  ``WHERE owner = <me>``, so a run that lost its lease (the reaper gave the job to another
  worker) can never commit again.
* **Resolution** writes the selection into ``job_item``; the transaction that writes the last
  rows sets ``total`` and ``resolved`` (on SQLite the rows go in slices of short write
  transactions, see :func:`models.resolve.resolve_in_slices`; a crash in between starts the
  resolution over).
* **Batches** read the next ``job_item`` rows after ``position``, apply the handler (guarded by
  the state it changes) and advance ``position``/``info`` in the same transaction: a batch
  is committed with its progress or not at all, so a run killed at any moment resumes at the
  first uncommitted batch and no item is processed twice.
* **Terminal.** The terminal status and ``finished_on`` commit first; then the job's items
  are deleted (in slices), the terminal event is appended with a once-key and ``announced``
  is set.  A crash in between is repaired by the
  next claim attempt or by the reaper (:func:`announce`).
* **Slices.** A run gives the job back after ``slice_seconds`` and re-queues it, so a huge job
  never holds a worker while small jobs wait behind it.
* **Other writers.** On SQLite batches are sized to take tens of milliseconds (shorter while
  other writers keep coming) and, between two batches, writers waiting for their turn go
  first (:func:`models.engine.let_writers_in`).
* **Order.** Jobs of one project start in the order they were queued (:func:`first_in_line`).
* **Failures.** A run that raises unexpectedly hands the job back and counts the failure on
  the job row (``failures``), not in the broker: the count survives lost messages and dead
  workers.  Below ``max_retries`` the caller retries after a back-off (:class:`RetryLater`);
  the job's heartbeat is pushed past the back-off so that the reaper does not re-queue it
  meanwhile.  Beyond it the job is rejected with ``info.error``.  Deadlocks and serialisation
  failures of a batch are retried in place first (they are not the job's fault).
* **The database or Redis away.** A database that cannot be reached, drops the connection,
  or stays locked past its busy timeout, and Redis refusing connections, timing out or
  loading its data — on the outbox's append, a progress event, the terminal event or a
  re-queue — (:func:`unavailable`) is not the job's fault either: the run
  hands the job back without counting a failure and retries after a back-off, for as long
  as it takes.  Should even the hand-back fail, the error goes to the task, which retries it
  the same way; the retry carries the failed run's lease name (``takeover``) and takes the
  job back at once.
* **One run per lease.**  Every run leases the job under a name of its own
  (:func:`new_owner`), and a claim succeeds only when nobody holds a live lease: a message
  delivered twice, or re-sent while its first run is alive, finds the job leased and hands
  back without touching anything.
* **Results.** A batch may produce the job's result (:class:`~worker.jobs.base.Result`); it
  is committed on the job row with the batch.  A failed result (status >= 400) ends the job
  ``rejected`` with ``info.error``, the result kept for the dialects.
* **Record events.**  Each batch writes the project-space events it owes (``records``
  UPDATE/DELETE, unless ``record_events`` is off, and schema events, SPEC §7) into the sync
  outbox (:mod:`models.outbox`) in the same transaction as the batch.  After the commit a
  thread of their own appends them (:class:`RecordEvents`, one append per
  :data:`EVENT_CHUNK` events) while the next batch runs, and a later transaction of the run
  deletes the appended rows.  They are appended after the commit, so a subscriber that
  reloads on an event sees the change, and all are in the log before the job's terminal
  event.  Rows left behind — the append failed (Redis away) or the worker died between the
  commit and the append — are appended by the job's next run before it does anything else
  (:func:`drain_outbox`), by :func:`announce` before a terminal event, and by the reaper: no
  event of a committed batch is lost, and none is appended twice: each part of an outbox row
  is appended under a once-key named after the row (outbox ids are never reused).
"""

from __future__ import annotations

import logging
import os
import queue
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import kombu.exceptions
import redis.exceptions
from sqlalchemy import Connection, Engine, and_, delete, insert, or_, select, update
from sqlalchemy.exc import DBAPIError

from bulkjobs import keys
from bulkjobs.errors import SelectionError, public_message
from bulkjobs.settings import get_settings
from bulkjobs.synclog import SyncLog
from models.engine import (
    BATCH_SECONDS,
    BATCH_SECONDS_CONTENDED,
    CONTENDED_SECONDS,
    FIRST_BATCH,
    get_engine,
    get_write_engine,
    let_writers_in,
    make_engine,
    next_batch_size,
)
from models.jobs import CANCELLED, DONE, PROCESSING, QUEUED, REJECTED, Job, JobItem
from models.outbox import JOB_EVENT, SyncOutbox
from models.resolve import delete_items, resolve_in_slices
from models.selection import parse_selection
from worker.jobs import CATALOGUE, Context, JobSpec
from worker.jobs.base import Effects, Result
from worker.progress import JobState, Publisher, append_state, append_states_once

logger = logging.getLogger(__name__)

MAX_ERRORS = 20
#: Record events appended per call (a batch of 1,000 subtree heads may change 100,000 rows);
#: they go into the log packed, :data:`bulkjobs.synclog.PACK` events per stream entry.
EVENT_CHUNK = 100_000
#: Attempts at one batch that hit a deadlock or serialisation failure.
TRANSIENT_TRIES = 4
#: The longest wait (seconds) between runs of a job while its database is away.
OUTAGE_RETRY_MAX = 30
jobs = Job.__table__
items = JobItem.__table__
outbox = SyncOutbox.__table__


class LeaseLost(Exception):
    """The job was handed to another worker; this run must stop without committing."""


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


@dataclass
class RunConfig:
    # Items per batch; with ``adaptive_batches`` the upper bound of batches sized to take
    # :data:`models.engine.BATCH_SECONDS` (the worker does so on SQLite, see
    # :func:`worker.tasks.run_config`); off here so that a runner driven directly takes
    # exactly ``batch_size`` items per batch.
    batch_size: int = 1000
    adaptive_batches: bool = False
    progress_interval: float = 0.1
    heartbeat_interval: float = 2.0
    stale_after: float = 30.0
    slice_seconds: float = 5.0
    # Record events (SPEC §7); the worker takes this from the settings (RECORD_EVENTS, on by
    # default there).  Off here so that a runner driven directly announces only job events.
    record_events: bool = False
    # Unexpected failures retried before the job is rejected (SPEC §6: up to 3 times).
    max_retries: int = 3


def backoff(failures: int) -> int:
    """Seconds before the retry that follows the ``failures``-th failure: 1, 2, 4, … ≤ 30."""
    return min(OUTAGE_RETRY_MAX, 2 ** max(0, failures - 1))


def state_of(row: Any) -> JobState:
    return JobState(
        token=row.token, project_gid=row.project_gid, job=row.job, status=row.status,
        info=dict(row.info or {}), created_on=row.created_on, updated_on=row.updated_on,
    )


def load(conn: Connection, token: str) -> Any:
    return conn.execute(select(jobs).where(jobs.c.token == token)).first()


#: The job row without its selection and actor (``params`` holds up to 100,000 gids).
_STATE_COLUMNS = [c for c in jobs.c if c.name not in ("params", "actor")]


def load_state(conn: Connection, token: str) -> Any:
    """The job row as the batch loop and the heartbeat need it: without ``params`` and
    ``actor``, which a run reads once (a large selection's text would otherwise be read and
    decoded twice a batch)."""
    return conn.execute(select(*_STATE_COLUMNS).where(jobs.c.token == token)).first()


def new_owner() -> str:
    """A lease owner for one run: unique per run (host, process and a random part), never
    per message or per worker process, so that a message delivered twice — or its copy the
    reaper sent — cannot take over the lease of a run of the same job that is still alive."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4()}"


def _claimable(now: float, stale_after: float, takeover: str | None) -> Any:
    """Nobody holds the job's lease, its holder stopped heart-beating, or it is held by
    ``takeover`` (the failed run whose retry this is)."""
    cond = [jobs.c.owner.is_(None), jobs.c.heartbeat_on < now - stale_after]
    if takeover:
        cond.append(jobs.c.owner == takeover)
    return or_(*cond)


def claim(conn: Connection, token: str, owner: str, *, stale_after: float,
          takeover: str | None = None) -> bool:
    """Take the job's lease for the run ``owner``: only when nobody holds a live one (see
    :func:`_claimable`).  A live run's lease is never shared, whoever asks."""
    now = time.time()
    result = conn.execute(update(jobs).where(
        jobs.c.token == token,
        jobs.c.status.in_((QUEUED, PROCESSING)),
        _claimable(now, stale_after, takeover),
    ).values(owner=owner, heartbeat_on=now, attempts=jobs.c.attempts + 1))
    return result.rowcount == 1


def first_in_line(conn: Connection, token: str, *, stale_after: float,
                  takeover: str | None = None) -> str:
    """The job a run for ``token`` should claim: ``token`` itself when that job has started
    before (a slice, a retry, a stale lease); otherwise — it has not started, or it cannot be
    claimed (finished, leased by a live run) — the oldest job of its project that has not
    started yet, when there is one.

    A job's message is a ticket for the next job of its project, so that jobs of one project
    start in the order they were queued whatever order their messages come in (two web
    processes sending at once, two worker processes taking messages at once, a message sent
    again by the reaper).  Every job has a message, and each message starts at most the one
    job first in line, so every job is started; a message that finds its job started by
    another one starts the next in line instead.  Jobs of other projects are not held up."""
    row = conn.execute(select(jobs.c.project_gid, jobs.c.status, jobs.c.owner,
                              jobs.c.heartbeat_on, jobs.c.attempts)
                       .where(jobs.c.token == token)).first()
    if row is None:
        return token
    claimable = row.status in (QUEUED, PROCESSING) and (
        row.owner is None or row.heartbeat_on < time.time() - stale_after
        or (takeover is not None and row.owner == takeover))
    if claimable and row.attempts > 0:
        return token
    first = conn.execute(select(jobs.c.token).where(
        jobs.c.status == QUEUED, jobs.c.project_gid == row.project_gid, jobs.c.attempts == 0,
        jobs.c.owner.is_(None), jobs.c.cancel_requested.is_(False),
    ).order_by(jobs.c.created_on, jobs.c.token).limit(1)).scalar()
    return first or token


def announce(log: SyncLog, token: str) -> bool:
    """Append the terminal event of a finished job if it has not been (idempotent)."""
    engine = get_engine()
    with engine.connect() as conn:
        row = load(conn, token)
    if row is None or row.status not in (DONE, REJECTED) or row.announced:
        return False
    drain_outbox(log, token)  # the job's project-space events before its terminal event
    # The job's items go before its terminal event (whoever sees the event sees them gone),
    # in slices: a million rows are not deleted in one write transaction.  A run that dies
    # meanwhile leaves the job unannounced, and the reaper calls this again.
    delete_items(get_engine(), token)
    append_state(log, state_of(row))
    with get_write_engine().begin() as conn:
        conn.execute(update(jobs).where(jobs.c.token == token).values(announced=True))
    return True


def finish(
    conn: Connection, token: str, *, status: str, info: dict[str, Any], owner: str | None,
    result_status: int | None = None, result_payload: dict[str, Any] | None = None,
) -> bool:
    """Commit a terminal state (only while holding the lease, when ``owner`` is given).  The
    job's ``job_item`` rows are deleted afterwards, in slices, by :func:`announce`."""
    now = time.time()
    cond = [jobs.c.token == token, jobs.c.status.in_((QUEUED, PROCESSING))]
    if owner is not None:
        cond.append(jobs.c.owner == owner)
    values: dict[str, Any] = dict(status=status, info=info, updated_on=now, finished_on=now,
                                  owner=None)
    if result_status is not None:
        values.update(result_status=result_status, result_payload=result_payload)
    return conn.execute(update(jobs).where(and_(*cond)).values(**values)).rowcount == 1


@lru_cache(maxsize=1)
def side_engine() -> Engine:
    """An engine (a connection pool) of its own for the heartbeat threads, one per process.

    Sharing the main pool, the heartbeat would check connections out between the batches
    and hand them back to the batch loop in turn; on SQLite every connection keeps its own
    page cache, so a worker would fill two or three caches instead of one (P9)."""
    return make_engine(get_settings().effective_database_url)


#: A running job's progress event goes out at least this often (SPEC §6: once a second).
PROGRESS_AT_LEAST = 1.0
#: How often the progress thread checks whether the job has been quiet too long.
PROGRESS_TICK = 0.2


class Heartbeat:
    """Background threads that keep the lease fresh and guarantee at least one progress
    event a second while a batch runs long.  They use :func:`side_engine`.

    The lease thread writes only when no batch (nor resolution slice) has committed a fresher
    heartbeat.  On SQLite its write takes its turn like any other (:mod:`models.engine`):
    it waits for at most the batch in hand, never for SQLite's busy timeout, so it does not
    fail because batches keep the database busy.

    Two threads, because the lease is a write and progress is a read: on SQLite a write
    waits for the database's one write lock, which the batch in hand (or another process's)
    may hold for as long as the batch runs, and progress must not wait with it.  The
    progress thread only reads the job row (WAL readers never wait) and appends to Redis."""

    def __init__(self, token: str, owner: str, publisher: Publisher, cfg: RunConfig) -> None:
        self.token, self.owner, self.publisher, self.cfg = token, owner, publisher, cfg
        self.stop = threading.Event()
        self.threads = [
            threading.Thread(target=self._beat, name=f"heartbeat-{token}", daemon=True),
            threading.Thread(target=self._progress, name=f"progress-{token}", daemon=True),
        ]

    def __enter__(self) -> Heartbeat:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=5)

    def _beat(self) -> None:
        while not self.stop.wait(self.cfg.heartbeat_interval):
            try:
                # Each batch commits the heartbeat too: while batches commit, this thread
                # only reads (WAL readers never wait) and does not queue for the write lock.
                with side_engine().connect() as conn:
                    beat = conn.execute(select(jobs.c.heartbeat_on).where(
                        jobs.c.token == self.token, jobs.c.owner == self.owner)).scalar()
                if beat is None:  # not ours any more
                    continue
                if beat >= time.time() - self.cfg.heartbeat_interval:
                    continue
                with side_engine().execution_options(writer=True).begin() as conn:
                    conn.execute(update(jobs).where(
                        jobs.c.token == self.token, jobs.c.owner == self.owner,
                    ).values(heartbeat_on=time.time()))
            except Exception:  # a missed beat is not fatal; the next one tries again
                logger.warning("heartbeat of job %s failed", self.token, exc_info=True,
                               extra={"job": self.token})

    def _progress(self) -> None:
        # Quiet for PROGRESS_AT_LEAST - PROGRESS_TICK: the next tick would be too late.
        quiet = PROGRESS_AT_LEAST - PROGRESS_TICK
        while not self.stop.wait(PROGRESS_TICK):
            try:
                if self.publisher.idle_for() >= quiet:
                    with side_engine().connect() as conn:
                        row = load_state(conn, self.token)
                    if row is not None and row.status == PROCESSING and row.owner == self.owner:
                        self.publisher.publish(state_of(row), force=True)
            except Exception:  # Redis or the database away a moment: the next tick tries
                logger.warning("progress event of job %s failed", self.token, exc_info=True,
                               extra={"job": self.token})


def run(
    token: str, *, log: SyncLog, cfg: RunConfig, requeue: Callable[[str], None],
    owner: str | None = None, takeover: str | None = None,
) -> str:
    """Run (a slice of) one job.  Returns what happened: ``done``, ``rejected``, ``sliced``,
    ``skipped`` (finished, cancelled before start, or leased by a live worker) or ``lost``.

    Raises :class:`RetryLater` when the job raised and may be retried; when it has failed
    more than ``cfg.max_retries`` times it is rejected instead (``rejected``).  An exception
    after the job was finished or handed on (e.g. Redis failing on the terminal event) is
    re-raised as it is: the job itself did not fail, the reaper repairs the announcement.

    ``owner`` names this run's lease (default :func:`new_owner`; it must be unique per run).
    ``takeover``: the lease of an earlier run that could not hand the job back (the
    database or Redis was away), which this run, its retry, may take over at once."""
    owner = owner or new_owner()
    with get_write_engine().begin() as conn:
        token = first_in_line(conn, token, stale_after=cfg.stale_after, takeover=takeover)
        claimed = claim(conn, token, owner, stale_after=cfg.stale_after, takeover=takeover)
    if not claimed:
        logger.debug("job %s: not claimed (finished, or leased by a live run)", token,
                     extra={"job": token})
        announce(log, token)
        return "skipped"
    logger.debug("job %s: claimed by %s", token, owner, extra={"job": token})
    publisher = Publisher(log, interval=cfg.progress_interval)
    try:
        with Heartbeat(token, owner, publisher, cfg), RecordEvents(log) as record_events:
            return _run_claimed(token, owner, log=log, cfg=cfg, publisher=publisher,
                                requeue=requeue, record_events=record_events)
    except LeaseLost:
        logger.warning("job %s: lease lost, stopping", token, extra={"job": token})
        return "lost"
    except Exception as exc:
        if unavailable(exc):
            return _wait_for_services(token, owner, exc)
        failures = _count_failure(token, owner)
        if failures is None:  # not ours any more (finished, or taken over): nothing to retry
            raise
        error = public_message(exc)  # no SQL, parameters or stack text in info.error
        if failures > cfg.max_retries:
            logger.error("job %s failed %s times, rejecting: %s", token, failures, exc,
                         exc_info=True, extra={"job": token})
            reject(token, log=log, error=error)
            return REJECTED
        countdown = backoff(failures)
        logger.warning("job %s failed (%s), retry %s in %s s", token, exc, failures, countdown,
                       exc_info=True, extra={"job": token})
        _push_heartbeat(token, countdown)
        raise RetryLater(token, failures, countdown) from exc
    except BaseException:
        # Shutdown (SystemExit, KeyboardInterrupt): hand the job back at once so that another
        # worker need not wait for the reaper; the batch in hand was rolled back.
        with get_write_engine().begin() as conn:
            conn.execute(update(jobs).where(jobs.c.token == token, jobs.c.owner == owner)
                         .values(owner=None))
        raise


def _wait_for_services(token: str, owner: str, exc: Exception) -> str:
    """The database or Redis is away: hand the job back uncounted and ask for a retry
    (:class:`RetryLater` with ``outage`` set: the caller picks the back-off from its own
    count of attempts)."""
    with get_write_engine().begin() as conn:  # raises while the database is still away
        failures = conn.execute(update(jobs).where(jobs.c.token == token, jobs.c.owner == owner)
                                .values(owner=None).returning(jobs.c.failures)).scalar()
    if failures is None:  # not ours any more: nothing to retry
        raise exc
    logger.warning("job %s: database or Redis unavailable (%s), handed back for a retry",
                   token, exc, extra={"job": token})
    _push_heartbeat(token, OUTAGE_RETRY_MAX)
    raise RetryLater(token, int(failures), 1, outage=True) from exc


#: Redis (the sync log, or the broker behind kombu) not answering, refusing connections, or
#: loading its data after a restart (``BusyLoadingError`` is a ``ConnectionError``).
REDIS_AWAY = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError,
              kombu.exceptions.OperationalError)


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


def _count_failure(token: str, owner: str) -> int | None:
    """Hand the job back and count one failure; ``None`` when this run no longer held it."""
    with get_write_engine().begin() as conn:
        taken = conn.execute(update(jobs).where(jobs.c.token == token, jobs.c.owner == owner)
                             .values(owner=None, failures=jobs.c.failures + 1)).rowcount
        if taken != 1:
            return None
        return int(conn.execute(select(jobs.c.failures).where(jobs.c.token == token))
                   .scalar_one())


def _push_heartbeat(token: str, countdown: int) -> None:
    # The retry message is due in ``countdown`` seconds; until then the job is not stale, so
    # the reaper does not start a second line of retries beside it.  Should the message be
    # lost, the reaper re-queues the job ``stale_after`` seconds after it was due.
    with get_write_engine().begin() as conn:
        conn.execute(update(jobs).where(jobs.c.token == token, jobs.c.owner.is_(None))
                     .values(heartbeat_on=time.time() + countdown))


def _run_claimed(
    token: str, owner: str, *, log: SyncLog, cfg: RunConfig, publisher: Publisher,
    requeue: Callable[[str], None], record_events: RecordEvents,
) -> str:
    # Events an earlier run committed but could not append come first.
    drain_outbox(log, token)
    engine = get_engine()
    with engine.connect() as conn:
        row = load(conn, token)
    spec = CATALOGUE.get(row.job)
    if spec is None:
        return _reject(token, owner, log, dict(row.info or {}), f"unknown job {row.job!r}",
                       publisher=publisher)
    if row.cancel_requested:
        return _reject(token, owner, log, dict(row.info or {}), CANCELLED, publisher=publisher)
    if not row.resolved:
        try:
            selection = parse_selection(row.params.get("selection"), kind=spec.kind)
        except SelectionError as exc:
            return _reject(token, owner, log, dict(row.info or {}), exc.message,
                           publisher=publisher)
        now = time.time()

        def leased(conn: Connection) -> None:  # every slice: still ours?
            _commit(conn, token, owner, dict(heartbeat_on=time.time()))

        def resolved(conn: Connection, total: int) -> None:  # with the last slice
            info = {"total": total, "remaining": total, "failed": 0, "errors": []}
            _commit(conn, token, owner, dict(
                resolved=True, status=PROCESSING, started_on=now, updated_on=now, info=info,
                position=0, heartbeat_on=time.time(),
            ))

        # In slices of short write transactions (models.resolve); a prepare step may add
        # items (e.g. tombstones of permanently deleted gids), and is counted in the total.
        total = resolve_in_slices(get_engine(), token=token, project_gid=row.project_gid,
                                  selection=selection, mode=spec.mode, prepare=spec.prepare,
                                  each=leased, last=resolved)
        with get_engine().connect() as conn:
            row = load(conn, token)
        logger.info("job %s: processing %s items", token, total, extra={"job": token})
        publisher.publish(state_of(row), force=True)
    actor, params = dict(row.actor or {}), dict(row.params or {})
    started = time.monotonic()
    size = min(FIRST_BATCH, cfg.batch_size) if cfg.adaptive_batches else cfg.batch_size
    contended_until = 0.0  # other writers waited for their turn lately: shorter batches
    while True:
        def step(n: int = size) -> tuple[Any, int, Effects, Sequence[int] | None, float]:
            return _batch_step(token, owner, spec, cfg, actor=actor, params=params,
                               appended=record_events.appended(), size=n)

        row, processed, effects, outbox_id, seconds = _retrying(token, step)
        if processed == 0:  # cancelled, or no item left
            break
        logger.debug("job %s: batch of %s committed, %s remaining", token, processed,
                     row.info["remaining"], extra={"job": token})
        if cfg.adaptive_batches and processed == size:  # a short last batch measures little
            target = (BATCH_SECONDS_CONTENDED if time.monotonic() < contended_until
                      else BATCH_SECONDS)
            size = next_batch_size(size, seconds, limit=cfg.batch_size, target=target)
        record_events.submit(row.project_gid, effects, outbox_id)
        publisher.publish(state_of(row))
        # Writers waiting for their turn (a submit, a cancel) go before the next batch
        # (SQLite; see models.engine).
        if let_writers_in(get_engine()):
            contended_until = time.monotonic() + CONTENDED_SECONDS
        if time.monotonic() - started >= cfg.slice_seconds:
            record_events.flush()  # the next run's events come after this run's
            with get_write_engine().begin() as conn:  # waiting in the queue from now on
                _commit(conn, token, owner, dict(owner=None, heartbeat_on=time.time()))
                _clear_outbox(conn, token)
            logger.info("job %s: slice over, re-queued", token, extra={"job": token})
            requeue(token)
            return "sliced"
    record_events.flush()  # every record event before the job's terminal event
    if row.cancel_requested:
        return _reject(token, owner, log, dict(row.info or {}), CANCELLED, publisher=publisher,
                       clear_outbox=True)
    info = dict(row.info or {})
    info["remaining"] = 0
    result = spec.no_item_result
    if row.result_status is not None:
        result = Result(int(row.result_status), dict(row.result_payload or {}))
    if result is not None and result.failed:
        return _reject(token, owner, log, info, _result_error(result), result=result,
                       publisher=publisher, clear_outbox=True)
    with get_write_engine().begin() as conn:
        if not finish(conn, token, status=DONE, info=info, owner=owner,
                      result_status=result.status if result else None,
                      result_payload=result.payload if result else None):
            raise LeaseLost(token)
        _clear_outbox(conn, token)
    publisher.close()  # no heartbeat progress event may follow the terminal one
    announce(log, token)
    logger.info("job %s: done", token, extra={"job": token})
    return DONE


def _progress(info: dict[str, Any], processed: int, failures: list[Any]) -> dict[str, Any]:
    """``info`` after a batch of ``processed`` items, ``failures`` of which failed."""
    info["remaining"] = max(0, int(info.get("remaining", 0)) - processed)
    info["failed"] = int(info.get("failed", 0)) + len(failures)
    errors = list(info.get("errors", []))
    errors += [{"gid": f.gid, "reason": f.reason}
               for f in failures[: max(0, MAX_ERRORS - len(errors))]]
    info["errors"] = errors
    return info


def _result_error(result: Result) -> str:
    error = result.payload.get("error") if isinstance(result.payload, dict) else None
    if isinstance(error, dict) and error.get("message"):
        return str(error["message"])
    return f"failed with status {result.status}"


def _batch_step(
    token: str, owner: str, spec: JobSpec, cfg: RunConfig, *, actor: dict[str, Any],
    params: dict[str, Any], appended: int | None = None, size: int | None = None,
) -> tuple[Any, int, Effects, Sequence[int] | None, float]:
    """Apply the job's handler to its next batch (``size`` items, default
    ``cfg.batch_size``) and commit it with the job's progress (and result) and its events
    (in the outbox) in one transaction; outbox rows of this job up to ``appended`` (already
    in the log) go in the same transaction.  Returns the job row after it, the number of
    items processed (0: cancelled or nothing left), the batch's effects, the outbox rows it
    wrote (``None``: it owes no events) and the seconds the transaction took (from holding
    the write lock to the end of its commit)."""
    effects = Effects(collect_events=cfg.record_events)
    with get_write_engine().begin() as conn:
        began = time.perf_counter()
        step = _batch_in(conn, token, owner, spec, cfg, effects, actor=actor, params=params,
                         appended=appended, size=size or cfg.batch_size)
    return (*step, time.perf_counter() - began)


def _batch_in(
    conn: Connection, token: str, owner: str, spec: JobSpec, cfg: RunConfig,
    effects: Effects, *, actor: dict[str, Any], params: dict[str, Any],
    appended: int | None, size: int,
) -> tuple[Any, int, Effects, Sequence[int] | None]:
    """The body of :func:`_batch_step`, inside its transaction."""
    if appended is not None:
        _clear_outbox(conn, token, up_to=appended)
    row = load_state(conn, token)
    if row.cancel_requested:
        return row, 0, effects, None
    batch = conn.execute(
        select(items.c.id, items.c.item_id)
        .where(items.c.job_token == token, items.c.id > row.position)
        .order_by(items.c.id).limit(size)
    ).all()
    if not batch:
        return row, 0, effects, None
    ctx = Context(token=token, project_gid=row.project_gid, actor=actor, params=params,
                  now=time.time(), effects=effects)
    failures = spec.batch(conn, ctx, [b.item_id for b in batch])
    # The heartbeat as of the commit, not the batch's start: a batch that ran longer
    # than ``stale_after`` must not leave the lease looking stale behind it.
    values: dict[str, Any] = dict(
        position=batch[-1].id, info=_progress(dict(row.info or {}), len(batch), failures),
        updated_on=ctx.now, heartbeat_on=time.time(),
    )
    if effects.result is not None:
        values.update(result_status=effects.result.status,
                      result_payload=effects.result.payload)
    _commit(conn, token, owner, values)
    outbox_id = _write_outbox(conn, token, row.project_gid, effects, now=ctx.now)
    return load_state(conn, token), len(batch), effects, outbox_id


def _retrying(token: str, step: Callable[[], Any]) -> Any:
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


class RecordEvents:
    """Appends each committed batch's project-space events from a thread of its own, so that
    the Redis work for batch *n* overlaps the SQL of batch *n + 1*.

    Batches are appended in commit order.  At most one batch waits while another is being
    appended (:meth:`submit` blocks meanwhile), so memory stays bounded.  :meth:`flush` waits
    until everything submitted is appended and re-raises an append's error (so does the next
    :meth:`submit`), which then counts as the job's failure, as a failed append in the batch
    loop would.  The events are in the outbox all the while: :meth:`appended` tells the run
    which of its outbox rows it may delete; whatever was not appended stays there for the
    next run (or the reaper) to append.
    """

    def __init__(self, log: SyncLog) -> None:
        self.log = log
        self.queue: queue.Queue[tuple[str, Effects, Sequence[int] | None] | None] = (
            queue.Queue(maxsize=1))
        self.error: BaseException | None = None
        self.thread: threading.Thread | None = None
        self._appended: int | None = None  # the last outbox row appended

    def __enter__(self) -> RecordEvents:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.thread is not None:  # drain what was submitted, then stop
            self.queue.put(None)
            self.thread.join()

    def submit(self, project_gid: str, effects: Effects,
               outbox_id: Sequence[int] | None = None) -> None:
        """Queue a committed batch's events; ``outbox_id`` holds the ids of the outbox rows
        they were written to (one per group of ``effects.events`` that has gids)."""
        self._raise()
        if not effects.events:
            return
        if self.thread is None:
            self.thread = threading.Thread(target=self._run, name="record-events", daemon=True)
            self.thread.start()
        self.queue.put((project_gid, effects, outbox_id))

    def flush(self) -> None:
        if self.thread is not None:
            self.queue.join()
        self._raise()

    def appended(self) -> int | None:
        """The last outbox row whose events are in the log (rows are appended in order)."""
        return self._appended

    def _raise(self) -> None:
        if self.error is not None:
            error, self.error = self.error, None
            raise error

    def _run(self) -> None:
        while True:
            item = self.queue.get()
            try:
                if item is None:
                    return
                if self.error is None:
                    project_gid, effects, outbox_id = item
                    groups = [(data_type, action, gids)
                              for (data_type, action), gids in effects.events.items() if gids]
                    if outbox_id is not None:
                        _append_events(self.log, project_gid, [
                            (row_id, *group)
                            for row_id, group in zip(outbox_id, groups, strict=True)])
                        self._appended = max(outbox_id)
            except Exception as exc:
                self.error = exc
            finally:
                self.queue.task_done()


def _append_events(log: SyncLog, project_gid: str,
                   rows: Iterable[tuple[int, str, str, Sequence[str]]]) -> None:
    """Append outbox rows' events ``(row id, data type, action, gids)`` to the project's
    space, packed (:meth:`SyncLog.append_records`): one append (one Lua call, one round trip)
    per :data:`EVENT_CHUNK` events of a row.  Each part carries a once-key named after its
    row and its place in the row (:func:`keys.outbox_appended`), so a row appended again —
    its job's next run after a crash between the append and the row's deletion, or the
    reaper — adds nothing twice: every event is in the log exactly once."""
    for row_id, data_type, action, gids in rows:
        for part, start in enumerate(range(0, len(gids), EVENT_CHUNK)):
            log.append_records(project_gid, [(data_type, action, gids[start:start + EVENT_CHUNK])],
                               once_key=keys.outbox_appended(row_id, part))


def _write_outbox(conn: Connection, token: str, project_gid: str, effects: Effects, *,
                  now: float) -> Sequence[int] | None:
    """Write a batch's events into the outbox (one row per data type and action that has
    gids, in the order of ``effects.events``); returns the rows' ids in that order, or
    ``None`` when the batch owes no events."""
    rows = [dict(job_token=token, project_gid=project_gid, data_type=data_type,
                 action=action, gids=" ".join(gids), created_on=now)
            for (data_type, action), gids in effects.events.items() if gids]
    if not rows:
        return None
    return conn.execute(insert(outbox).returning(outbox.c.id, sort_by_parameter_order=True),
                        rows).scalars().all()


def _clear_outbox(conn: Connection, token: str, *, up_to: int | None = None) -> None:
    """Delete the job's outbox rows (up to id ``up_to``): their events are in the log."""
    cond = [outbox.c.job_token == token]
    if up_to is not None:
        cond.append(outbox.c.id <= up_to)
    conn.execute(delete(outbox).where(*cond))


def drain_outbox(log: SyncLog, token: str, *, job_events_only: bool = False) -> int:
    """Append the events a job left in the outbox — its ``queued`` event, its committed
    batches' events — oldest first, and delete those rows; returns the number of events
    appended.  A failure leaves the rows (and raises): the next drain appends them again,
    and the once-keys of :func:`_append_events` and :func:`_append_job_event` keep what had
    been appended from being appended twice.  ``job_events_only``: leave the batches' rows
    to the job's run (the reaper drains a waiting job's ``queued`` event)."""
    cond = [outbox.c.job_token == token]
    if job_events_only:
        cond.append(outbox.c.data_type == JOB_EVENT)
    with get_engine().connect() as conn:
        ids = list(conn.execute(select(outbox.c.id).where(*cond)
                                .order_by(outbox.c.id)).scalars())
    if not ids:
        return 0
    appended = 0
    for outbox_id in ids:  # one row at a time: a row may hold 100,000 gids
        with get_engine().connect() as conn:
            row = conn.execute(select(outbox).where(outbox.c.id == outbox_id)).first()
        if row is None:  # drained meanwhile by another run
            continue
        if row.data_type == JOB_EVENT:
            _append_job_event(log, row)
            appended += 1
            continue
        gids = row.gids.split()
        _append_events(log, row.project_gid, [(row.id, row.data_type, row.action, gids)])
        appended += len(gids)
    with get_write_engine().begin() as conn:
        conn.execute(delete(outbox).where(outbox.c.id.in_(ids)))
    logger.info("job %s: appended %s events left in the outbox", token, appended,
                extra={"job": token})
    return appended


def _append_job_event(log: SyncLog, row: Any) -> None:
    """Append the job event of an outbox row (its ``queued`` event, rebuilt from the job
    row's fields that never change), at most once (the row's once-key)."""
    with get_engine().connect() as conn:
        job = conn.execute(select(jobs.c.token, jobs.c.project_gid, jobs.c.job,
                                  jobs.c.created_on).where(jobs.c.token == row.job_token)).first()
    if job is None:
        return
    state = JobState(job.token, job.project_gid, job.job, row.action, {}, job.created_on,
                     job.created_on)
    append_states_once(log, [(state, keys.outbox_appended(row.id, 0))], insert=True)


def _commit(conn: Connection, token: str, owner: str, values: dict[str, Any]) -> None:
    result = conn.execute(
        update(jobs).where(jobs.c.token == token, jobs.c.owner == owner).values(**values)
    )
    if result.rowcount != 1:
        raise LeaseLost(token)


def _reject(token: str, owner: str | None, log: SyncLog, info: dict[str, Any], error: str,
            *, result: Result | None = None, publisher: Publisher | None = None,
            clear_outbox: bool = False) -> str:
    """Commit the job ``rejected`` and announce it.  ``clear_outbox``: every event the job's
    batches owe is in the log (the run flushed them), so its outbox rows go with it."""
    info = {**info, "error": error}
    if error == CANCELLED:  # told apart from a failure (the error text is the same for both)
        info["cancelled"] = True
    with get_write_engine().begin() as conn:
        if not finish(conn, token, status=REJECTED, info=info, owner=owner,
                      result_status=result.status if result else None,
                      result_payload=result.payload if result else None):
            raise LeaseLost(token)
        if clear_outbox:
            _clear_outbox(conn, token)
    if publisher is not None:
        publisher.close()  # no heartbeat progress event may follow the terminal one
    announce(log, token)
    logger.info("job %s: rejected (%s)", token, error, extra={"job": token})
    return REJECTED


def reject(token: str, *, log: SyncLog, error: str) -> bool:
    """Reject an unfinished job whoever holds it (retries exhausted, cancelled in queue)."""
    with get_engine().connect() as conn:
        row = load(conn, token)
    if row is None or row.status not in (QUEUED, PROCESSING):
        return False
    try:
        _reject(token, None, log, dict(row.info or {}), error)
    except LeaseLost:
        return False
    return True
