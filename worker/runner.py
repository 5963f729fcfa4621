"""Running one job: claim, resolve, work through batches, finish.

Crash safety rests on the job row, not on the broker:

* **Lease.** A run first *claims* the job (``owner`` + fresh ``heartbeat_on``); a claim
  succeeds only when nobody holds a live lease.  Every batch commits with
  ``WHERE owner = <me>``, so a run that lost its lease (the reaper gave the job to another
  worker) can never commit again.
* **Resolution** writes the selection into ``job_item`` and ``total`` in one transaction.
* **Batches** read the next ``job_item`` rows after ``position``, apply the handler (guarded by
  the state it changes) and advance ``position``/``info`` in the same transaction: a batch
  is committed with its progress or not at all, so a run killed at any moment resumes at the
  first uncommitted batch and no item is processed twice.
* **Terminal.** The terminal status and ``finished_on`` commit first; then the terminal event
  is appended with a once-key and ``announced`` is set.  A crash in between is repaired by the
  next claim attempt or by the reaper (:func:`announce`).
* **Slices.** A run gives the job back after ``slice_seconds`` and re-queues it, so a huge job
  never holds a worker while small jobs wait behind it.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, and_, delete, or_, select, update

from bulkjobs.errors import SelectionError
from bulkjobs.synclog import SyncLog
from models.engine import get_engine, get_write_engine
from models.jobs import DONE, PROCESSING, QUEUED, REJECTED, Job, JobItem
from models.resolve import resolve_into
from models.selection import parse_selection
from worker.jobs import CATALOGUE, Context
from worker.progress import JobState, Publisher, append_state

logger = logging.getLogger(__name__)

MAX_ERRORS = 20
jobs = Job.__table__
items = JobItem.__table__


class LeaseLost(Exception):
    """The job was handed to another worker; this run must stop without committing."""


@dataclass
class RunConfig:
    batch_size: int = 1000
    progress_interval: float = 0.1
    heartbeat_interval: float = 2.0
    stale_after: float = 30.0
    slice_seconds: float = 5.0


def state_of(row: Any) -> JobState:
    return JobState(
        token=row.token, project_gid=row.project_gid, job=row.job, status=row.status,
        info=dict(row.info or {}), created_on=row.created_on, updated_on=row.updated_on,
    )


def load(conn: Connection, token: str) -> Any:
    return conn.execute(select(jobs).where(jobs.c.token == token)).first()


def claim(conn: Connection, token: str, owner: str, *, stale_after: float) -> bool:
    now = time.time()
    result = conn.execute(update(jobs).where(
        jobs.c.token == token,
        jobs.c.status.in_((QUEUED, PROCESSING)),
        or_(jobs.c.owner.is_(None), jobs.c.owner == owner,
            jobs.c.heartbeat_on < now - stale_after),
    ).values(owner=owner, heartbeat_on=now, attempts=jobs.c.attempts + 1))
    return result.rowcount == 1


def announce(log: SyncLog, token: str) -> bool:
    """Append the terminal event of a finished job if it has not been (idempotent)."""
    engine = get_engine()
    with engine.connect() as conn:
        row = load(conn, token)
    if row is None or row.status not in (DONE, REJECTED) or row.announced:
        return False
    append_state(log, state_of(row))
    with get_write_engine().begin() as conn:
        conn.execute(update(jobs).where(jobs.c.token == token).values(announced=True))
    return True


def finish(
    conn: Connection, token: str, *, status: str, info: dict[str, Any], owner: str | None,
    result_status: int | None = None, result_payload: dict[str, Any] | None = None,
) -> bool:
    """Commit a terminal state (only while holding the lease, when ``owner`` is given)."""
    now = time.time()
    cond = [jobs.c.token == token, jobs.c.status.in_((QUEUED, PROCESSING))]
    if owner is not None:
        cond.append(jobs.c.owner == owner)
    values: dict[str, Any] = dict(status=status, info=info, updated_on=now, finished_on=now,
                                  owner=None)
    if result_status is not None:
        values.update(result_status=result_status, result_payload=result_payload)
    done = conn.execute(update(jobs).where(and_(*cond)).values(**values)).rowcount == 1
    if done:
        conn.execute(delete(items).where(items.c.job_token == token))
    return done


class Heartbeat:
    """Background thread: keeps the lease fresh and guarantees at least one progress event a
    second while a batch runs long."""

    def __init__(self, token: str, owner: str, publisher: Publisher, cfg: RunConfig) -> None:
        self.token, self.owner, self.publisher, self.cfg = token, owner, publisher, cfg
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"heartbeat-{token}", daemon=True)

    def __enter__(self) -> Heartbeat:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=5)

    def _run(self) -> None:
        tick = min(self.cfg.heartbeat_interval, 1.0)
        last_beat = time.monotonic()
        while not self.stop.wait(tick):
            try:
                if time.monotonic() - last_beat >= self.cfg.heartbeat_interval:
                    with get_write_engine().begin() as conn:
                        conn.execute(update(jobs).where(
                            jobs.c.token == self.token, jobs.c.owner == self.owner,
                        ).values(heartbeat_on=time.time()))
                    last_beat = time.monotonic()
                if self.publisher.idle_for() >= 1.0:
                    with get_engine().connect() as conn:
                        row = load(conn, self.token)
                    if row is not None and row.status == PROCESSING and row.owner == self.owner:
                        self.publisher.publish(state_of(row), force=True)
            except Exception:  # a missed beat is not fatal; the next tick tries again
                logger.warning("heartbeat of job %s failed", self.token, exc_info=True)


def run(
    token: str, *, log: SyncLog, cfg: RunConfig, requeue: Callable[[str], None],
    owner: str | None = None,
) -> str:
    """Run (a slice of) one job.  Returns what happened: ``done``, ``rejected``, ``sliced``,
    ``skipped`` (finished, cancelled before start, or leased by a live worker) or ``lost``."""
    owner = owner or f"run-{uuid.uuid4()}"
    with get_write_engine().begin() as conn:
        claimed = claim(conn, token, owner, stale_after=cfg.stale_after)
    if not claimed:
        announce(log, token)
        return "skipped"
    publisher = Publisher(log, interval=cfg.progress_interval)
    try:
        with Heartbeat(token, owner, publisher, cfg):
            return _run_claimed(token, owner, log=log, cfg=cfg, publisher=publisher,
                                requeue=requeue)
    except LeaseLost:
        logger.warning("job %s: lease lost, stopping", token)
        return "lost"
    except BaseException:
        # Hand the job back at once so a retry need not wait for the reaper.
        with get_write_engine().begin() as conn:
            conn.execute(update(jobs).where(jobs.c.token == token, jobs.c.owner == owner)
                         .values(owner=None))
        raise


def _run_claimed(
    token: str, owner: str, *, log: SyncLog, cfg: RunConfig, publisher: Publisher,
    requeue: Callable[[str], None],
) -> str:
    engine = get_engine()
    with engine.connect() as conn:
        row = load(conn, token)
    spec = CATALOGUE.get(row.job)
    if spec is None:
        return _reject(token, owner, log, dict(row.info or {}), f"unknown job {row.job!r}")
    if row.cancel_requested:
        return _reject(token, owner, log, dict(row.info or {}), "cancelled")
    if not row.resolved:
        try:
            selection = parse_selection(row.params.get("selection"), kind=spec.kind)
        except SelectionError as exc:
            return _reject(token, owner, log, dict(row.info or {}), exc.message)
        now = time.time()
        with get_write_engine().begin() as conn:
            conn.execute(delete(items).where(items.c.job_token == token))
            total = resolve_into(conn, token=token, project_gid=row.project_gid,
                                 selection=selection, mode=spec.mode)
            info = {"total": total, "remaining": total, "failed": 0, "errors": []}
            _commit(conn, token, owner, dict(
                resolved=True, status=PROCESSING, started_on=now, updated_on=now, info=info,
                position=0, heartbeat_on=now,
            ))
            row = load(conn, token)
        logger.info("job %s: processing %s items", token, total)
        publisher.publish(state_of(row), force=True)
    ctx = Context(token=token, project_gid=row.project_gid, actor=dict(row.actor or {}),
                  params=dict(row.params or {}), now=time.time())
    started = time.monotonic()
    while True:
        with get_write_engine().begin() as conn:
            row = load(conn, token)
            if row.cancel_requested:
                break
            batch = conn.execute(
                select(items.c.id, items.c.item_id)
                .where(items.c.job_token == token, items.c.id > row.position)
                .order_by(items.c.id).limit(cfg.batch_size)
            ).all()
            if not batch:
                break
            ctx = Context(token=ctx.token, project_gid=ctx.project_gid, actor=ctx.actor,
                          params=ctx.params, now=time.time())
            failures = spec.batch(conn, ctx, [b.item_id for b in batch])
            info = dict(row.info or {})
            info["remaining"] = max(0, int(info.get("remaining", 0)) - len(batch))
            info["failed"] = int(info.get("failed", 0)) + len(failures)
            errors = list(info.get("errors", []))
            errors += [{"gid": f.gid, "reason": f.reason}
                       for f in failures[: max(0, MAX_ERRORS - len(errors))]]
            info["errors"] = errors
            _commit(conn, token, owner, dict(position=batch[-1].id, info=info,
                                             updated_on=ctx.now, heartbeat_on=ctx.now))
            row = load(conn, token)
        logger.debug("job %s: batch of %s committed, %s remaining", token, len(batch),
                     info["remaining"])
        publisher.publish(state_of(row))
        if time.monotonic() - started >= cfg.slice_seconds:
            with get_write_engine().begin() as conn:
                _commit(conn, token, owner, dict(owner=None))
            logger.info("job %s: slice over, re-queued", token)
            requeue(token)
            return "sliced"
    if row.cancel_requested:
        return _reject(token, owner, log, dict(row.info or {}), "cancelled")
    info = dict(row.info or {})
    info["remaining"] = 0
    with get_write_engine().begin() as conn:
        if not finish(conn, token, status=DONE, info=info, owner=owner):
            raise LeaseLost(token)
    announce(log, token)
    logger.info("job %s: done", token)
    return DONE


def _commit(conn: Connection, token: str, owner: str, values: dict[str, Any]) -> None:
    result = conn.execute(
        update(jobs).where(jobs.c.token == token, jobs.c.owner == owner).values(**values)
    )
    if result.rowcount != 1:
        raise LeaseLost(token)


def _reject(token: str, owner: str | None, log: SyncLog, info: dict[str, Any], error: str) -> str:
    info = {**info, "error": error}
    with get_write_engine().begin() as conn:
        if not finish(conn, token, status=REJECTED, info=info, owner=owner):
            raise LeaseLost(token)
    announce(log, token)
    logger.info("job %s: rejected (%s)", token, error)
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
