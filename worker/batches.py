"""One batch of a job: the handler applied to the next items, committed with the job's
progress, its result and its events in one transaction.

* **Batches** read the next ``job_item`` rows after ``position``, apply the handler (guarded by
  the state it changes) and advance ``position``/``info`` in the same transaction: a batch
  is committed with its progress or not at all, so a run killed at any moment resumes at the
  first uncommitted batch and no item is processed twice.  The commit is guarded by the
  lease (:func:`worker.lease.commit`).
* **Paused.** Before its items are read, a batch reads whether the job's project is paused
  (:mod:`models.pauses`): then it does nothing and says so (:attr:`Batch.paused`), and the
  run stops (:mod:`worker.pausing`).
* The batch's project-space events go into the sync outbox in the same transaction
  (:func:`worker.outbox.write_outbox`); outbox rows already appended are deleted with it.
* So do its failed items, each with its reason (:mod:`models.failures`): ``info.errors``
  keeps the first 20, the failure rows keep them all.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, NamedTuple

from sqlalchemy import Connection, bindparam, select

from models.failures import keep as keep_failures
from models.jobs import JobItem
from models.pauses import is_paused
from worker.deps import Deps, RunConfig
from worker.jobs import Context, JobSpec
from worker.jobs.base import Effects
from worker.lease import commit_row
from worker.outbox import LEFT, clear_outbox, holdable, write_outbox
from worker.rows import StateRow, load_state
from worker.terminal import Done, done_in, done_result

#: Item errors kept in ``info.errors`` (the count of failures goes on in ``info.failed``).
MAX_ERRORS = 20
items = JobItem.__table__


class Batch(NamedTuple):
    """What :func:`batch_step` did."""

    #: The job row after the batch.
    row: StateRow
    #: Items processed (0: cancelled, paused, or nothing left).
    processed: int
    effects: Effects
    #: The outbox rows the batch wrote (``None``: it owes no events).
    outbox_id: Sequence[int] | None
    #: Seconds the transaction took, from holding the write lock to the end of its commit.
    seconds: float
    #: The job's project is paused: nothing was done.
    paused: bool = False
    #: The batch took the job's last items and committed it ``done`` as well (``end``).
    done: Done | None = None


def batch_step(
    deps: Deps, token: str, owner: str, spec: JobSpec, cfg: RunConfig, *,
    actor: dict[str, Any], params: dict[str, Any], appended: int | None = None,
    size: int | None = None, end: bool = False,
) -> Batch:
    """Apply the job's handler to its next batch (``size`` items, default
    ``cfg.batch_size``) and commit it with the job's progress (and result) and its events
    (in the outbox) in one transaction; outbox rows of this job up to ``appended`` (already
    in the log) go in the same transaction.

    ``end``: should the batch take the job's last items (fewer than ``size``), the job is
    committed ``done`` in the same transaction (:func:`worker.terminal.done_in`), unless it
    ends otherwise (its result failed) or its events are too many to be held back for its
    terminal event (:func:`worker.outbox.holdable`); :attr:`Batch.done` says whether it was.
    The run then announces it (:func:`worker.terminal.announce_done`)."""
    effects = Effects(collect_events=cfg.record_events)
    with LEFT.deleted() as delete_left, deps.write_engine.begin() as conn:
        began = time.perf_counter()
        row, processed, outbox_id, paused, done = _batch_in(
            conn, token, owner, spec, effects, actor=actor, params=params, appended=appended,
            size=size or cfg.batch_size, end=end)
        if done is not None:
            delete_left(conn)
    return Batch(row, processed, effects, outbox_id, time.perf_counter() - began,
                 paused=paused, done=done)


#: The batch's items: the next ``size`` after the job's position (built once, see
#: :mod:`worker.lease`).
_NEXT_ITEMS = (select(items.c.id, items.c.item_id)
               .where(items.c.job_token == bindparam("token"), items.c.id > bindparam("after"))
               .order_by(items.c.id).limit(bindparam("size")))


def _batch_in(
    conn: Connection, token: str, owner: str, spec: JobSpec, effects: Effects, *,
    actor: dict[str, Any], params: dict[str, Any], appended: int | None, size: int,
    end: bool = False,
) -> tuple[StateRow, int, Sequence[int] | None, bool, Done | None]:
    """The body of :func:`batch_step`, inside its transaction: the job row after it, the
    items processed, the outbox rows written, whether the job's project is paused, and the
    job committed ``done`` (``end``)."""
    if appended is not None:
        clear_outbox(conn, token, up_to=appended)
    row = _state(conn, token)
    if row.cancel_requested:
        return row, 0, None, False, None
    if is_paused(conn, row.project_gid):
        return row, 0, None, True, None
    batch = conn.execute(_NEXT_ITEMS, {"token": token, "after": row.position,
                                       "size": size}).all()
    if not batch:
        return row, 0, None, False, None
    ctx = Context(token=token, project_gid=row.project_gid, actor=actor, params=params,
                  now=time.time(), effects=effects)
    failures = spec.batch(conn, ctx, [b.item_id for b in batch])
    keep_failures(conn, token, failures)  # every failure, beyond the 20 of info.errors
    # The heartbeat as of the commit, not the batch's start: a batch that ran longer
    # than ``stale_after`` must not leave the lease looking stale behind it.
    values: dict[str, Any] = dict(
        position=batch[-1].id, info=_progress(dict(row.info or {}), len(batch), failures),
        updated_on=ctx.now, heartbeat_on=time.time(),
    )
    if end and len(batch) < size and holdable(effects):
        result = done_result(spec, effects.result)
        if result is None or not result.failed:
            outbox_id = write_outbox(conn, token, row.project_gid, effects, now=ctx.now)
            done = done_in(conn, token, owner, info={**values["info"], "remaining": 0},
                           result=result,
                           keep=outbox_id or ())
            return done.row, len(batch), outbox_id, False, done
    if effects.result is not None:
        values.update(result_status=effects.result.status,
                      result_payload=effects.result.payload)
    after = commit_row(conn, token, owner, values, StateRow)
    outbox_id = write_outbox(conn, token, row.project_gid, effects, now=ctx.now)
    return after, len(batch), outbox_id, False, None


def _state(conn: Connection, token: str) -> StateRow:
    row = load_state(conn, token)
    assert row is not None, token  # a job's row goes only after it finished (retention)
    return row


def _progress(info: dict[str, Any], processed: int, failures: list[Any]) -> dict[str, Any]:
    """``info`` after a batch of ``processed`` items, ``failures`` of which failed."""
    info["remaining"] = max(0, int(info.get("remaining", 0)) - processed)
    info["failed"] = int(info.get("failed", 0)) + len(failures)
    errors = list(info.get("errors", []))
    errors += [{"gid": f.gid, "reason": f.reason}
               for f in failures[: max(0, MAX_ERRORS - len(errors))]]
    info["errors"] = errors
    return info
