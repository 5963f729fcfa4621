"""Running one job: claim, resolve, work through batches, finish.

Crash safety rests on the job row, not on the broker.  The parts, each with its module:

* **Lease** (:mod:`worker.lease`).  A run claims the job under a name of its own; every
  batch commits only while the run holds the lease, so a run that lost it can never commit
  again, and a message delivered twice finds the job leased.  Jobs of one project start in
  the order they were queued.
* **Resolution** (here) writes the selection into ``job_item``; the transaction that writes
  the last rows sets ``total`` and ``resolved`` (on SQLite the rows go in slices of short
  write transactions, see :func:`models.resolve.resolve_in_slices`; a crash in between starts
  the resolution over).  A selection of a few plain gids is resolved in the claim's own
  transaction (:func:`_started_at_claim`).
* **Batches** (:mod:`worker.batches`) are committed with their progress, result and events
  or not at all, so a run killed at any moment resumes at the first uncommitted batch and no
  item is processed twice.
* **Record events** (:mod:`worker.outbox`) go into the sync outbox with their batch and are
  appended to the log by a thread of their own after the commit; rows left behind are
  appended by the next run, the announcement or the reaper, each exactly once.
* **Heartbeat** (:mod:`worker.heartbeat`): threads that keep the lease fresh and send a
  progress event at least once a second.
* **Terminal** (:mod:`worker.terminal`).  The terminal status commits first, then the
  job's items are deleted, the terminal event is appended and ``announced`` is set (with the
  process's next claim, :mod:`worker.announced`); a crash in between is repaired by the next
  claim attempt or by the reaper.  A job started at its claim and done in its first batch
  commits its terminal status in that batch's transaction: a small job's whole life is two
  write transactions, the claim (with its resolution) and its batch (with its end).
* **Failures and outages** (:mod:`worker.retry`).  A run that raises hands the job back and
  counts the failure on the job row; below ``max_retries`` the caller retries after a
  back-off, beyond it the job is rejected.  The database or Redis away is not the job's
  fault: the job is handed back uncounted and retried for as long as it takes.
* **Slices** (here).  A run gives the job back after ``slice_seconds`` and re-queues it, so a
  huge job never holds a worker while small jobs wait behind it.
* **Pause** (:mod:`worker.pausing`).  Before each batch the run reads whether the job's
  project is paused; then it hands the job back after the batch in hand, uncounted and not
  re-queued, with an ``info.paused: true`` event; resuming sends its message again.
* **Other writers** (here).  On SQLite batches are sized to take tens of milliseconds
  (shorter while other writers keep coming) and, between two batches, writers waiting for
  their turn go first (:func:`models.engine.let_writers_in`).

A run is given its settings and what it works with (:mod:`worker.deps`) by its caller,
:func:`worker.tasks.run_job`.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import Connection, bindparam, select

from bulkjobs.errors import SelectionError
from models import webhook_deliveries
from models.engine import (
    BATCH_SECONDS,
    BATCH_SECONDS_CONTENDED,
    CONTENDED_SECONDS,
    FIRST_BATCH,
    let_writers_in,
    next_batch_size,
)
from models.jobs import CANCELLED, DONE, PROCESSING, QUEUED, REJECTED, Job
from models.pauses import is_paused
from models.resolve import few_gids, resolve_in, resolve_in_slices
from models.selection import Selection, parse_selection
from models.selection_store import load as load_selection
from worker.announced import ANNOUNCED
from worker.batches import Batch, batch_step
from worker.deps import Deps, RunConfig
from worker.heartbeat import Heartbeat
from worker.jobs import CATALOGUE, JobSpec
from worker.lease import (
    LeaseLost,
    claim_row,
    claimable,
    commit,
    commit_row,
    first_in_line,
    first_unstarted,
    new_owner,
    release,
)
from worker.outbox import RecordEvents, clear_outbox, drain_outbox, outbox_ids
from worker.pausing import PAUSED, hold, stopped, unmark
from worker.progress import Publisher, append_state
from worker.retry import failed, retrying
from worker.rows import JobRow, load, state_of
from worker.terminal import announce, announce_done, conclude, reject_run
from worker.webhooks import kick

logger = logging.getLogger(__name__)
jobs = Job.__table__


def run(
    token: str, *, deps: Deps, cfg: RunConfig, requeue: Callable[[str], None],
    owner: str | None = None, takeover: str | None = None,
    claimed: Callable[[], None] | None = None,
) -> str:
    """Run (a slice of) one job.  Returns what happened: ``done``, ``rejected``, ``sliced``,
    ``paused`` (stopped, or not started, because its project is paused), ``skipped``
    (finished, cancelled before start, or leased by a live worker) or ``lost``.

    Raises :class:`worker.retry.RetryLater` when the job raised and may be retried; when it
    has failed more than ``cfg.max_retries`` times it is rejected instead (``rejected``).  An
    exception after the job was finished or handed on (e.g. Redis failing on the terminal
    event) is re-raised as it is: the job itself did not fail, the reaper repairs the
    announcement.

    ``owner`` names this run's lease (default :func:`worker.lease.new_owner`; it must be
    unique per run).  ``takeover``: the lease of an earlier run that could not hand the job
    back (the database or Redis was away), which this run, its retry, may take over at once.
    ``claimed`` is called once this run holds the lease (its claim committed): until then an
    error leaves the lease where it was (``takeover``'s, when the database went away before
    the claim), which the caller's retry must then take over instead."""
    owner = owner or new_owner()
    sent_for = token
    if cfg.follow_seconds > 0 and takeover is None and _nothing_to_claim(deps, token, cfg):
        # A message whose job a following run took (worker.follow), most likely: no write
        # transaction (on SQLite, no writers' turn) to find that out.
        logger.debug("job %s: nothing to claim", token, extra={"job": token})
        return "skipped"
    with ANNOUNCED.written() as marks, deps.write_engine.begin() as conn:
        marks(conn)  # the process's jobs finished since its last claim
        # Two messages taken at once look for the job first in line together: on PostgreSQL
        # the second passes over the row the first one's claim holds and takes the next in
        # line (lease.first_unstarted); should it still lose a claim (its own job, which it
        # had to wait for), it looks again (each statement sees what the other committed),
        # so that no message is spent without starting a job while one waits.  SQLite runs
        # these transactions one at a time.  It stops when first in line is a job it tried.
        tried: set[str] = set()
        while True:
            token = first_in_line(conn, sent_for, stale_after=cfg.stale_after,
                                  takeover=takeover)
            got = claim_row(conn, token, owner, stale_after=cfg.stale_after,
                            takeover=takeover)
            if got is not None or token in tried:
                break
            tried.add(token)
        start = None if got is None else _start(conn, token, owner, *got)
    if start is None:
        logger.debug("job %s: not claimed (finished, paused, or leased by a live run)", token,
                     extra={"job": token})
        announce(deps, token)
        # Its project paused: the job waits for resume, which sends its message again.
        return "paused" if hold(deps, sent_for) else "skipped"
    logger.debug("job %s: claimed by %s", token, owner, extra={"job": token})
    if claimed is not None:
        claimed()
    publisher = Publisher(deps.log, interval=cfg.progress_interval)
    try:
        with (Heartbeat(token, owner, publisher, cfg, engine=deps.side_engine),
              RecordEvents(deps.log) as record_events):
            return _run_claimed(deps, token, owner, start, cfg=cfg, publisher=publisher,
                                requeue=requeue, record_events=record_events)
    except LeaseLost:
        logger.warning("job %s: lease lost, stopping", token, extra={"job": token})
        return "lost"
    except Exception as exc:
        return failed(deps, token, owner, exc, cfg=cfg)
    except BaseException:
        # Shutdown (SystemExit, KeyboardInterrupt): hand the job back at once so that another
        # worker need not wait for the reaper; the batch in hand was rolled back.
        release(deps, token, owner)
        raise


#: What :func:`_nothing_to_claim` reads of a job (built once, see :mod:`worker.lease`).
_CLAIM_STATE = select(jobs.c.project_gid, jobs.c.status, jobs.c.announced, jobs.c.owner,
                      jobs.c.heartbeat_on).where(jobs.c.token == bindparam("token"))


def _nothing_to_claim(deps: Deps, token: str, cfg: RunConfig) -> bool:
    """Read only: the job is finished and announced (or its mark waits in this process,
    :mod:`worker.announced`), or held by a live run, and its project has no job that no run
    started — so the claim's write transaction would find nothing to claim, nothing to
    announce and nothing to hold."""
    with deps.engine.connect() as conn:
        row = conn.execute(_CLAIM_STATE, {"token": token}).first()
        if row is None:
            return False
        finished = row.status in (DONE, REJECTED) and (row.announced
                                                       or ANNOUNCED.waiting(token))
        live = row.status in (QUEUED, PROCESSING) and not claimable(
            row, stale_after=cfg.stale_after)
        return (finished or live) and first_unstarted(conn, row.project_gid) is None


@dataclass(frozen=True, slots=True)
class _Start:
    """What a run starts from, read in its claim's transaction: the job row, its stored
    selection (until it is resolved) and the outbox rows an earlier run left.  ``started``:
    the job was resolved and started in that transaction too (:func:`_started_at_claim`),
    its ``job.processing`` webhook deliveries ``deliveries``; ``parsed``: the stored
    selection, parsed when it was read."""

    row: JobRow
    selection: Any
    outbox: list[int]
    started: bool = False
    deliveries: tuple[int, ...] = ()
    #: The stored selection, parsed (once, in the claim's transaction).
    parsed: Selection | None = None


def _start(conn: Connection, token: str, owner: str, row: JobRow, selection: Any) -> _Start:
    """What the run starts from: the row and stored selection its claim returned."""
    return _started_at_claim(conn, token, owner, _Start(row, selection, outbox_ids(conn, token)))


def _started_at_claim(conn: Connection, token: str, owner: str, start: _Start) -> _Start:
    """A new job over a few plain gids (:func:`models.resolve.few_gids`) is resolved and
    started in its claim's transaction: its resolution is bounded by its size, as a batch
    is, and a small job spends no write transaction (on SQLite: no writers' turn) of its own
    on it.  Any other job is resolved after the claim (:func:`_resolve`), from the
    selection parsed here."""
    row, spec = start.row, CATALOGUE.get(start.row.job)
    if (row.resolved or start.selection is None or spec is None or row.cancel_requested
            or (row.info or {}).get(PAUSED)):
        return start
    try:
        selection = load_selection(start.selection)
    except ValueError:  # another version's: parsed after the claim (_selection)
        return start
    if not few_gids(selection):
        return replace(start, parsed=selection)
    # Its first claim (``attempts`` counts them): no run wrote items for it before.
    total = resolve_in(conn, token=token, project_gid=row.project_gid, selection=selection,
                       mode=spec.mode, prepare=spec.prepare, fresh=row.attempts == 1)
    started, deliveries = _mark_started(conn, token, owner, total, time.time())
    return _Start(started, None, start.outbox, started=True, deliveries=tuple(deliveries))


def _run_claimed(
    deps: Deps, token: str, owner: str, start: _Start, *, cfg: RunConfig,
    publisher: Publisher, requeue: Callable[[str], None], record_events: RecordEvents,
) -> str:
    """The run of a claimed job.  A job started at its claim holds its ``processing`` event
    back while its first batch runs (:func:`_announce_started`); whatever ends the run
    before that event is in the log — an error, a lost lease, a shutdown — appends it
    first, unless Redis is away too (the job's state events then go on without it)."""
    # Events an earlier run committed but could not append come first.
    drain_outbox(deps, token, ids=start.outbox)
    if start.started:
        _announce_started(token, start.row, start.deliveries, publisher=publisher, hold=True)
    try:
        return _run_started(deps, token, owner, start, cfg=cfg, publisher=publisher,
                            requeue=requeue, record_events=record_events)
    except BaseException:
        with contextlib.suppress(Exception):
            publisher.release()
        raise


def _run_started(
    deps: Deps, token: str, owner: str, start: _Start, *, cfg: RunConfig,
    publisher: Publisher, requeue: Callable[[str], None], record_events: RecordEvents,
) -> str:
    row = start.row
    if (row.info or {}).get(PAUSED):  # resumed while its last run stopped
        resumed = unmark(deps, token, owner)
        if resumed is not None:
            publisher.publish(resumed, force=True)
        row = _load(deps, token)
    spec = CATALOGUE.get(row.job)
    if spec is None:
        return reject_run(deps, token, owner, dict(row.info or {}),
                          f"unknown job {row.job!r}", publisher=publisher)
    if row.cancel_requested:
        return reject_run(deps, token, owner, dict(row.info or {}), CANCELLED,
                          publisher=publisher)
    if not row.resolved:
        try:
            selection = (start.parsed if start.parsed is not None
                         else _selection(token, row, spec, start.selection))
        except SelectionError as exc:
            return reject_run(deps, token, owner, dict(row.info or {}), exc.message,
                              publisher=publisher)
        row = _resolve(deps, token, owner, row, spec, selection, publisher=publisher)
    actor, params = dict(row.actor or {}), dict(row.params or {})
    started = time.monotonic()
    size = min(FIRST_BATCH, cfg.batch_size) if cfg.adaptive_batches else cfg.batch_size
    contended_until = 0.0  # other writers waited for their turn lately: shorter batches
    # A job started at its claim and done in its first batch is committed done in that
    # batch's transaction (worker.batches.batch_step's ``end``).
    end = publisher.holding
    while True:
        def step(n: int = size, end: bool = end) -> Batch:
            return batch_step(deps, token, owner, spec, cfg, actor=actor, params=params,
                              appended=record_events.appended(), size=n, end=end)

        batch = retrying(token, step)
        end = False
        if batch.done is not None:
            # Its processing event, this batch's record events and its terminal event go to
            # the log together, in one round trip (the batch ended the job only because its
            # events are few enough to be held: worker.outbox.holdable).
            record_events.hold(batch.row.project_gid, batch.effects, batch.outbox_id)
            return announce_done(deps, token, batch.done, publisher=publisher,
                                 records=record_events.held())
        if batch.paused:
            publisher.release()  # the job stops: its processing event before its paused one
            return _stop(deps, token, owner, batch, publisher=publisher,
                         requeue=requeue, record_events=record_events)
        if batch.processed == 0:  # cancelled, or no item left
            break
        exhausted = batch.processed < size  # fewer items than asked for: none left after
        logger.debug("job %s: batch of %s committed, %s remaining", token, batch.processed,
                     batch.row.info["remaining"], extra={"job": token})
        if cfg.adaptive_batches and batch.processed == size:  # a short last batch measures little
            target = (BATCH_SECONDS_CONTENDED if time.monotonic() < contended_until
                      else BATCH_SECONDS)
            size = next_batch_size(size, batch.seconds, limit=cfg.batch_size, target=target)
        if exhausted and publisher.holding and record_events.hold(
                batch.row.project_gid, batch.effects, batch.outbox_id):
            # Done in its first batch: its processing event, this batch's record events and
            # its terminal event go to the log together, in one round trip (conclude).
            break
        publisher.release()  # the job goes on: its processing event before anything else
        record_events.submit(batch.row.project_gid, batch.effects, batch.outbox_id,
                             last=exhausted)
        publisher.publish(state_of(batch.row))
        if exhausted:  # the last items are done: no batch that would find nothing left
            break
        # Writers waiting for their turn (a submit, a cancel) go before the next batch
        # (SQLite; see models.engine).
        if let_writers_in(deps.engine):
            contended_until = time.monotonic() + CONTENDED_SECONDS
        if time.monotonic() - started >= cfg.slice_seconds:
            record_events.flush()  # the next run's events come after this run's
            with deps.write_engine.begin() as conn:  # waiting in the queue from now on
                commit(conn, token, owner, dict(owner=None, heartbeat_on=time.time()))
                clear_outbox(conn, token)
            logger.info("job %s: slice over, re-queued", token, extra={"job": token})
            requeue(token)
            return "sliced"
    record_events.flush()  # every record event before the job's terminal event
    return conclude(deps, token, owner, spec, batch.row, publisher=publisher,
                    records=record_events.held())


def _stop(deps: Deps, token: str, owner: str, batch: Batch, *, publisher: Publisher,
          requeue: Callable[[str], None], record_events: RecordEvents) -> str:
    """Hand a job whose project is paused back after the batch in hand: uncounted (no
    failure), not re-queued, with an ``info.paused: true`` event (see :mod:`worker.pausing`)."""
    record_events.flush()  # the batches' record events before the job's paused event
    row = batch.row
    info = stopped(dict(row.info or {}))
    with deps.write_engine.begin() as conn:
        commit(conn, token, owner, dict(owner=None, heartbeat_on=time.time(), info=info))
        clear_outbox(conn, token)
    publisher.close()  # no progress event of this run after the paused one
    append_state(deps.log, state_of(row, info=info))
    logger.info("job %s: paused after %s items", token,
                info.get("total", 0) - info.get("remaining", 0), extra={"job": token})
    with deps.engine.connect() as conn:
        paused = is_paused(conn, row.project_gid)
    if not paused:  # resumed meanwhile: resume may have found the job still leased
        requeue(token)
    return "paused"


def _selection(token: str, row: JobRow, spec: JobSpec, stored: Any) -> Selection:
    """The selection as parsed when the job was submitted (``stored`` with it); a row
    written by an older version, without one, has its request's selection parsed here (it
    was checked at submit, and is the product's: it may hold internal entries)."""
    if stored is not None:
        try:
            return load_selection(stored)
        except ValueError:
            logger.warning("job %s: stored selection of another version; parsing its "
                           "request's", token, extra={"job": token})
    return parse_selection(row.params.get("selection"), kind=spec.kind, internal=True)


def _resolve(deps: Deps, token: str, owner: str, row: JobRow, spec: JobSpec,
             selection: Selection, *, publisher: Publisher) -> JobRow:
    """Write the job's selection into ``job_item`` and start it (``processing``, ``total``);
    returns the job row after it."""
    now = time.time()
    deliveries: list[int] = []
    started: list[JobRow] = []

    def leased(conn: Connection) -> None:  # every slice: still ours?
        commit(conn, token, owner, dict(heartbeat_on=time.time()))

    def resolved(conn: Connection, total: int) -> None:  # with the last slice
        now_started, deliveries[:] = _mark_started(conn, token, owner, total, now)
        started[:] = [now_started]

    # In slices of short write transactions (models.resolve); a prepare step may add
    # items (e.g. tombstones of permanently deleted gids), and is counted in the total.
    resolve_in_slices(deps.engine, token=token, project_gid=row.project_gid,
                      selection=selection, mode=spec.mode, prepare=spec.prepare,
                      each=leased, last=resolved)
    row = started[0]  # resolve_in_slices calls ``last`` in its last transaction
    _announce_started(token, row, deliveries, publisher=publisher)
    return row


def _mark_started(conn: Connection, token: str, owner: str, total: int,
                  now: float) -> tuple[JobRow, list[int]]:
    """Start a resolved job of ``total`` items (``processing``) in the transaction of its
    last resolved rows, with its ``job.processing`` webhook deliveries; the started row and
    the deliveries."""
    info = {"total": total, "remaining": total, "failed": 0, "errors": []}
    row = commit_row(conn, token, owner, dict(
        resolved=True, status=PROCESSING, started_on=now, updated_on=now, info=info,
        position=0, heartbeat_on=time.time(),
    ), JobRow)
    return row, webhook_deliveries.outbox(conn, token, "job.processing")


def _announce_started(token: str, row: JobRow, deliveries: Sequence[int], *,
                      publisher: Publisher, hold: bool = False) -> None:
    """After the commit that started the job: its webhooks and its ``processing`` event.
    ``hold``: the event waits while the job's first batch runs (:meth:`Publisher.hold`), so
    that a job done in that batch appends it with its record events and its terminal
    event, in one round trip (:mod:`worker.terminal`)."""
    kick(deliveries)
    logger.info("job %s: processing %s items", token, (row.info or {}).get("total"),
                extra={"job": token})
    if hold:
        publisher.hold(state_of(row))
    else:
        publisher.publish(state_of(row), force=True)


def _load(deps: Deps, token: str) -> JobRow:
    with deps.engine.connect() as conn:
        row = load(conn, token)
    assert row is not None, token  # claimed: the row is there
    return row
