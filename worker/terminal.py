"""A job's end: its terminal state committed, then announced.

* **Terminal.** The terminal status and ``finished_on`` commit first
  (:func:`worker.lease.finish`), with the job's items when they are few
  (:data:`~models.resolve.FEW_ITEMS`: a small job spends no transaction of its own on
  them); then the rest of the items are deleted (in slices), the terminal event is appended
  with a once-key and ``announced`` is set (:func:`announce`; by a run, with the process's
  next claim, :mod:`worker.announced`).  A crash in between is repaired by the next claim
  attempt or by the reaper, which call :func:`announce` again.  A job done in its first
  batch commits ``done`` in that batch's transaction (:func:`done_in`, called by
  :func:`worker.batches.batch_step`), then is announced as any other
  (:func:`announce_done`).
* **One round trip.**  A job done in its first batch held its ``processing`` event and that
  batch's record events back (:meth:`worker.progress.Publisher.hold`,
  :meth:`worker.outbox.RecordEvents.hold`): they are appended with its terminal event, in
  that order, by one script call (:func:`worker.progress.append_end`).  Their outbox rows
  outlive the terminal transaction: should the append fail, the repair appends them before
  the terminal event (the ``processing`` event is then missing from the log: the job's
  state events go on with its terminal one); once it succeeded, they go with the process's
  next terminal transaction (:data:`worker.outbox.LEFT`).
* **Results.** A batch may produce the job's result (:class:`~worker.jobs.base.Result`); it
  is committed on the job row with the batch.  A failed result (status >= 400) ends the job
  ``rejected`` with ``info.error``, the result kept for the dialects (:func:`conclude`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, NamedTuple

from sqlalchemy import Connection, update

from models import webhook_deliveries
from models.jobs import CANCELLED, DONE, PROCESSING, QUEUED, REJECTED, Job
from models.resolve import FEW_ITEMS, delete_few_items, delete_items
from worker.announced import ANNOUNCED
from worker.deps import Deps
from worker.jobs import JobSpec
from worker.jobs.base import Result
from worker.lease import LeaseLost, finish
from worker.outbox import LEFT, Held, clear_outbox, drain_outbox
from worker.progress import JobState, Publisher, append_end
from worker.rows import JobRow, StateRow, load, state_of
from worker.webhooks import kick

# The job lifecycle logs under one name, whichever of its modules writes the line.
logger = logging.getLogger("worker.runner")

jobs = Job.__table__


def announce(deps: Deps, token: str, *, items_deleted: bool = False,
             finished: StateRow | None = None, later: bool = False,
             started: JobState | None = None, records: Held | None = None) -> bool:
    """Append the terminal event of a finished job if it has not been (idempotent).
    ``items_deleted``: its ``job_item`` rows went with its terminal state.  ``finished``:
    the row as the run's terminal transaction left it, that transaction having also deleted
    the job's outbox rows (the run had appended their events, or holds them in ``records``):
    nothing to read first.  ``later``: ``announced`` is set with the process's next claim
    (:mod:`worker.announced`), not in a transaction of its own.  ``started`` and
    ``records``: the ``processing`` event and the record events the run held back, appended
    before the terminal event in its round trip."""
    row: JobRow | StateRow | None = finished
    if finished is None:
        with deps.engine.connect() as conn:
            row = load(conn, token)
        if row is None or row.status not in (DONE, REJECTED) or row.announced:
            return False
        drain_outbox(deps, token)  # the job's project-space events before its terminal event
    assert row is not None
    # The job's items go before its terminal event (whoever sees the event sees them gone),
    # in slices: a million rows are not deleted in one write transaction.  A run that dies
    # meanwhile leaves the job unannounced, and the reaper calls this again.
    if not items_deleted:
        delete_items(deps.engine, token)
    append_end(deps.log, state_of(row), held=[started] if started is not None else [],
               project=records.project_gid if records is not None else "",
               records=records.parts if records is not None else ())
    if records is not None:  # in the log: their rows go with the next terminal transaction
        LEFT.add(records.ids)
    if later:
        ANNOUNCED.add(token, deps.side_engine)
        return True
    with deps.write_engine.begin() as conn:
        conn.execute(update(jobs).where(jobs.c.token == token).values(announced=True))
    return True


def conclude(deps: Deps, token: str, owner: str, spec: JobSpec, row: StateRow, *,
             publisher: Publisher, records: Held | None = None) -> str:
    """End a run that has no item left (``row``: the job row after its last batch): ``done``,
    or ``rejected`` when it was cancelled or its result failed.  Every record event of the
    run must be in the log already, or held back for the terminal event in ``records``
    (the terminal event comes after them)."""
    if row.cancel_requested:
        return reject_run(deps, token, owner, dict(row.info or {}), CANCELLED,
                          publisher=publisher, flushed=True, records=records)
    info = dict(row.info or {})
    info["remaining"] = 0
    result = done_result(spec, None if row.result_status is None
                         else Result(int(row.result_status), dict(row.result_payload or {})))
    if result is not None and result.failed:
        return reject_run(deps, token, owner, info, _result_error(result), result=result,
                          publisher=publisher, flushed=True, records=records)
    with LEFT.deleted() as delete_left, deps.write_engine.begin() as conn:
        done = done_in(conn, token, owner, info=info, result=result,
                       keep=records.ids if records is not None else ())
        delete_left(conn)
    return announce_done(deps, token, done, publisher=publisher, records=records)


class Done(NamedTuple):
    """A job committed ``done`` (:func:`done_in`): the finished row, whether its items went
    with it, and its ``job.done`` webhook deliveries."""

    row: StateRow
    few: bool
    deliveries: list[int]


def done_result(spec: JobSpec, result: Result | None) -> Result | None:
    """The result a job ends with: its batches' (``result``), else its kind's for no item."""
    return result if result is not None else spec.no_item_result


def done_in(conn: Connection, token: str, owner: str, *, info: dict[str, Any],
            result: Result | None, keep: Sequence[int] = ()) -> Done:
    """Commit the job ``done`` in the caller's transaction (:class:`LeaseLost` when the lease
    is gone): its items when few, and its outbox rows but ``keep`` (their events held back
    for the terminal event's round trip), go with it.  The caller also deletes the rows
    :data:`~worker.outbox.LEFT` holds (``LEFT.deleted()``), and then calls
    :func:`announce_done` after the commit."""
    finished, few = _finish(conn, token, owner, status=DONE, info=info, result=result)
    clear_outbox(conn, token, keep=keep)
    return Done(finished, few, webhook_deliveries.outbox(conn, token, "job.done"))


def announce_done(deps: Deps, token: str, done: Done, *, publisher: Publisher,
                  records: Held | None = None) -> str:
    """After the commit of :func:`done_in`: its webhooks, and its terminal event appended with
    the ``processing`` event and the record events the run held back, in one round trip."""
    kick(done.deliveries)
    started = publisher.close()  # no heartbeat progress event may follow the terminal one
    announce(deps, token, items_deleted=done.few, finished=done.row, later=True,
             started=started, records=records)
    logger.info("job %s: done", token, extra={"job": token})
    return DONE


def _finish(conn: Connection, token: str, owner: str | None, *, status: str,
            info: dict[str, Any], result: Result | None) -> tuple[StateRow, bool]:
    """Commit the terminal state (:func:`worker.lease.finish`, :class:`LeaseLost` when the
    lease is gone) and, when the job's items are known to be few (its total, once resolved),
    delete them in the same transaction: the finished row, and whether it did."""
    finished = finish(conn, token, status=status, info=info, owner=owner,
                      result_status=result.status if result else None,
                      result_payload=result.payload if result else None)
    if finished is None:
        raise LeaseLost(token)
    total = info.get("total")
    few = isinstance(total, int) and total <= FEW_ITEMS
    if few:
        delete_few_items(conn, token)
    return finished, few


def _result_error(result: Result) -> str:
    error = result.payload.get("error") if isinstance(result.payload, dict) else None
    if isinstance(error, dict) and error.get("message"):
        return str(error["message"])
    return f"failed with status {result.status}"


def reject_run(deps: Deps, token: str, owner: str | None, info: dict[str, Any], error: str,
               *, result: Result | None = None, publisher: Publisher | None = None,
               flushed: bool = False, records: Held | None = None) -> str:
    """Commit the job ``rejected`` (while ``owner`` holds it, when given) and announce it.
    ``flushed``: every event the job's batches owe is in the log (the run flushed them), or
    held back for the terminal event in ``records``, so its other outbox rows go with it."""
    info = {**info, "error": error}
    if error == CANCELLED:  # told apart from a failure (the error text is the same for both)
        info["cancelled"] = True
    with LEFT.deleted() as delete_left, deps.write_engine.begin() as conn:
        row, few = _finish(conn, token, owner, status=REJECTED, info=info, result=result)
        if flushed:
            clear_outbox(conn, token, keep=records.ids if records is not None else ())
        delete_left(conn)
        deliveries = webhook_deliveries.outbox(conn, token, "job.rejected")
        finished = row if flushed else None
    kick(deliveries)
    # no heartbeat progress event may follow the terminal one
    started = publisher.close() if publisher is not None else None
    announce(deps, token, items_deleted=few, finished=finished, later=publisher is not None,
             started=started, records=records)
    logger.info("job %s: rejected (%s)", token, error, extra={"job": token})
    return REJECTED


def reject(token: str, *, deps: Deps, error: str) -> bool:
    """Reject an unfinished job whoever holds it (retries exhausted, cancelled in queue or
    while paused)."""
    with deps.engine.connect() as conn:
        row = load(conn, token)
    if row is None or row.status not in (QUEUED, PROCESSING):
        return False
    info = dict(row.info or {})
    info.pop("paused", None)  # a paused job (worker.pausing) ends like any other
    try:
        reject_run(deps, token, None, info, error)
    except LeaseLost:
        return False
    return True
