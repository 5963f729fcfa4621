"""Webhook deliveries: an outbox of job states to send, written in the job's transaction.

When a job starts (``job.processing``, once) or finishes (``job.done``/``job.rejected``), the
transaction that commits it also writes one :class:`WebhookDelivery` per webhook of the
project that wants the event (:func:`outbox`), holding the body to send: the job's public
state at that moment.  A crash after the commit loses none: the rows are there, and the
sweeper sends whatever is due (:func:`due`).  Each delivery keeps one id
(``X-Bulkjobs-Delivery``) for all its attempts, so a receiver can drop duplicates — delivery
is at least once.

A sender first leases a delivery (:func:`lease`: its next attempt is moved past the
attempt's time-out, so a second sender does not take it meanwhile, and a sender that dies
leaves it due again later), then records the attempt (:func:`record`): status, duration,
error.  A failed attempt is tried again after the next delay of its back-off
(:func:`backoff`: 10 s doubling up to an hour, eleven retries, 12,310 s or about 3 hours
25 minutes in all by default); after the last one the delivery is ``failed``.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, Engine, Index, bindparam, delete, insert, select, update
from sqlmodel import Field, SQLModel

from bulkjobs import cursors
from models.jobs import Job
from models.webhooks import Webhook

#: The longest wait between two attempts, and the least time a delivery is retried for.
MAX_DELAY, RETRIED_FOR = 3600.0, 3 * 3600.0


def backoff(base: float) -> tuple[float, ...]:
    """Seconds before each retry of a failed attempt: ``base`` doubling up to
    :data:`MAX_DELAY`, as many as it takes for them to add up to :data:`RETRIED_FOR` —
    a shorter first delay (``WEBHOOK_BACKOFF_BASE``) gives more retries, never a shorter
    time of trying."""
    delays: list[float] = []
    while sum(delays) < RETRIED_FOR:
        delays.append(min(base * 2 ** len(delays), MAX_DELAY))
    return tuple(delays)


#: The default back-off: 10, 20, 40, … 2560, 3600, 3600 (eleven retries, 12,310 s in all).
BACKOFF = backoff(10.0)
PENDING, DELIVERED, FAILED = "pending", "delivered", "failed"
#: The longest error text kept for an attempt.
MAX_ERROR = 500


class WebhookDelivery(SQLModel, table=True):
    __tablename__ = "webhook_delivery"
    __table_args__ = (Index("ix_webhook_delivery_due", "status", "next_attempt_on"),
                      Index("ix_webhook_delivery_webhook", "webhook_gid", "id"),
                      Index("ix_webhook_delivery_created", "created_on"))

    id: int | None = Field(default=None, primary_key=True)
    delivery: str = Field(max_length=36, unique=True)
    webhook_gid: str = Field(max_length=36)
    project_gid: str = Field(max_length=36)
    job_token: str = Field(max_length=36)
    event: str = Field(max_length=32)
    body: str  # the JSON text sent, and signed, on every attempt
    status: str = Field(default=PENDING, max_length=16)
    attempts: int = 0
    next_attempt_on: float
    created_on: float
    finished_on: float | None = None


class WebhookAttempt(SQLModel, table=True):
    __tablename__ = "webhook_attempt"
    __table_args__ = (Index("ix_webhook_attempt_delivery", "delivery_id", "id"),)

    id: int | None = Field(default=None, primary_key=True)
    delivery_id: int
    started_on: float
    duration_ms: float
    status_code: int | None = None
    error: str | None = Field(default=None, max_length=MAX_ERROR)


deliveries = WebhookDelivery.__table__  # type: ignore[attr-defined]
attempts = WebhookAttempt.__table__  # type: ignore[attr-defined]
jobs = Job.__table__  # type: ignore[attr-defined]
hooks = Webhook.__table__  # type: ignore[attr-defined]

#: The job ``b_token`` and the webhooks of its project, in one query (the project's
#: webhooks by index); built once, as every job's state change reads it.
_JOB_AND_ITS_HOOKS = (
    select(jobs.c.token, jobs.c.project_gid, jobs.c.job, jobs.c.status, jobs.c.info,
           jobs.c.created_on, jobs.c.updated_on, hooks.c.gid, hooks.c.events)
    .select_from(jobs.join(hooks, hooks.c.project_gid == jobs.c.project_gid))
    .where(jobs.c.token == bindparam("b_token"))
)


def outbox(conn: Connection, token: str, event: str) -> list[int]:
    """In the transaction that committed the job's new state: one delivery of ``event``
    (the job as it is now) per webhook of its project that wants it; their ids."""
    rows = conn.execute(_JOB_AND_ITS_HOOKS, {"b_token": token}).all()
    wanted = [r for r in rows if event in (r.events or [])]
    if not wanted:
        return []
    r, now = wanted[0], time.time()
    body = json.dumps({"event": event, "job": {
        "token": r.token, "project_gid": r.project_gid, "job": r.job, "status": r.status,
        "info": r.info, "created_on": r.created_on, "updated_on": r.updated_on}},
        separators=(",", ":"))
    ids = conn.execute(insert(deliveries).returning(deliveries.c.id), [
        {"delivery": str(uuid.uuid4()), "webhook_gid": w.gid, "project_gid": r.project_gid,
         "job_token": token, "event": event, "body": body, "status": PENDING, "attempts": 0,
         "next_attempt_on": now, "created_on": now} for w in wanted]).scalars().all()
    return list(ids)


def due(conn: Connection, *, now: float, limit: int = 200) -> list[int]:
    """Pending deliveries whose next attempt is due, oldest first (by index)."""
    return list(conn.execute(
        select(deliveries.c.id).where(deliveries.c.status == PENDING,
                                      deliveries.c.next_attempt_on <= now)
        .order_by(deliveries.c.next_attempt_on).limit(limit)).scalars())


def lease(engine: Engine, delivery_id: int, *, hold: float) -> dict[str, Any] | None:
    """Take a due delivery for one attempt (its next attempt moved ``hold`` seconds on, so
    no other sender takes it meanwhile): the delivery with its webhook's URL and secret, or
    ``None`` when it is not due, is finished, or its webhook is gone (then it is failed)."""
    now = time.time()
    with engine.begin() as conn:
        taken = conn.execute(update(deliveries).where(
            deliveries.c.id == delivery_id, deliveries.c.status == PENDING,
            deliveries.c.next_attempt_on <= now).values(next_attempt_on=now + hold)).rowcount
        if taken != 1:
            return None
        row = conn.execute(
            select(deliveries, hooks.c.url, hooks.c.secret)
            .select_from(deliveries.outerjoin(hooks, hooks.c.gid == deliveries.c.webhook_gid))
            .where(deliveries.c.id == delivery_id)).mappings().one()
        if row["url"] is None:
            conn.execute(update(deliveries).where(deliveries.c.id == delivery_id)
                         .values(status=FAILED, finished_on=now))
            return None
        return dict(row)


def record(engine: Engine, delivery_id: int, *, started_on: float, duration_ms: float,
           status_code: int | None, error: str | None,
           delays: Sequence[float] = BACKOFF) -> str:
    """Record one attempt and what follows from it: ``delivered`` on a 2xx answer without an
    error (an answer whose body did not come within the deadline is a time-out), else the
    next attempt after the next of ``delays``, or ``failed`` after the last one.  The
    delivery's status after it."""
    ok = status_code is not None and 200 <= status_code < 300 and not error
    with engine.begin() as conn:
        conn.execute(insert(attempts).values(
            delivery_id=delivery_id, started_on=started_on, duration_ms=duration_ms,
            status_code=status_code, error=(error or None) and error[:MAX_ERROR]))
        made = conn.execute(select(deliveries.c.attempts).where(
            deliveries.c.id == delivery_id)).scalar_one() + 1
        now = time.time()
        if ok:
            status, values = DELIVERED, {"finished_on": now}
        elif made > len(delays):
            status, values = FAILED, {"finished_on": now}
        else:
            status, values = PENDING, {"next_attempt_on": now + delays[made - 1]}
        conn.execute(update(deliveries).where(deliveries.c.id == delivery_id)
                     .values(status=status, attempts=made, **values))
    return status


def page(conn: Connection, *, webhook_gid: str, size: int,
         cursor: str | None) -> tuple[list[dict[str, Any]], str | None]:
    """One page of a webhook's deliveries, newest first, each with its attempts; the cursor
    of the next page (``None`` at the end)."""
    query = select(deliveries).where(deliveries.c.webhook_gid == webhook_gid)
    if cursor:
        (before,) = cursors.decode(cursor, (int,))
        query = query.where(deliveries.c.id < before)
    rows = conn.execute(query.order_by(deliveries.c.id.desc()).limit(size + 1)).mappings().all()
    more, rows = len(rows) > size, rows[:size]
    tried: dict[int, list[dict[str, Any]]] = {r["id"]: [] for r in rows}
    if tried:
        for a in conn.execute(select(attempts).where(attempts.c.delivery_id.in_(list(tried)))
                              .order_by(attempts.c.id)).mappings():
            tried[a["delivery_id"]].append({
                "started_on": a["started_on"], "duration_ms": a["duration_ms"],
                "status_code": a["status_code"], "error": a["error"]})
    out = [{"delivery": r["delivery"], "event": r["event"], "job": r["job_token"],
            "status": r["status"], "attempts": tried[r["id"]], "created_on": r["created_on"],
            "finished_on": r["finished_on"], "next_attempt_on":
                r["next_attempt_on"] if r["status"] == PENDING else None} for r in rows]
    return out, (cursors.encode([rows[-1]["id"]]) if more else None)


def forget(conn: Connection, ids: Sequence[int]) -> None:
    """Delete deliveries with their attempts."""
    if ids:
        conn.execute(delete(attempts).where(attempts.c.delivery_id.in_(list(ids))))
        conn.execute(delete(deliveries).where(deliveries.c.id.in_(list(ids))))


def expire(engine: Engine, *, before: float, limit: int = 1000) -> int:
    """Remove finished deliveries (with their attempts) made before ``before``, in
    transactions of at most ``limit``; how many went.  (Those of a deleted webhook stay
    until then, failed, as its jobs' history.)"""
    gone = 0
    while True:
        with engine.begin() as conn:
            ids = list(conn.execute(select(deliveries.c.id).where(
                deliveries.c.created_on < before, deliveries.c.status != PENDING)
                .limit(limit)).scalars())
            forget(conn, ids)
        gone += len(ids)
        if len(ids) < limit:
            return gone

