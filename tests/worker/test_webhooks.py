"""Webhook deliveries: written in the job's own transactions, signed, retried with back-off,
every attempt recorded (models.webhook_deliveries, worker.webhooks)."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Any

import pytest
from sqlalchemy import select, text, update
from sqlmodel import Session

from bulkjobs.settings import get_settings
from bulkjobs.synclog import SyncLog
from models import webhook_deliveries as wd
from models.engine import get_engine, get_write_engine
from models.seed import SeededProject
from models.webhooks import create
from tests.plans import captured, explained, violations
from tests.worker.helpers import deps, do, new_job
from tests.worker.receiver import receiver
from worker.terminal import reject
from worker.webhooks import deliver_webhook, sweep_webhooks

SECRET = "0123456789abcdef-secret"
DELETE = "bulk_delete_records"


def hook(project: SeededProject, url: str, events: list[str]) -> str:
    with Session(get_engine()) as session:
        return create(session, project_gid=project.gid, url=url, events=events, secret=SECRET,
                      user_gid="u", allow_private=True).gid


def deliveries() -> list[Any]:
    with get_engine().connect() as conn:
        return list(conn.execute(select(wd.deliveries).order_by(wd.deliveries.c.id)))


def attempts(delivery_id: int) -> list[Any]:
    with get_engine().connect() as conn:
        return list(conn.execute(select(wd.attempts).where(
            wd.attempts.c.delivery_id == delivery_id).order_by(wd.attempts.c.id)))


def make_due(delivery_id: int) -> None:
    """As if its back-off had passed."""
    with get_write_engine().begin() as conn:
        conn.execute(update(wd.deliveries).where(wd.deliveries.c.id == delivery_id)
                     .values(next_attempt_on=time.time() - 1))


@pytest.fixture
def private_ok(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(get_settings(), "webhooks_allow_private", True)


def test_a_job_writes_one_delivery_per_webhook_and_event_it_wants(log: SyncLog,
                                                                 project: SeededProject):
    """A job that starts and finishes gives ``job.processing`` (once) and ``job.done`` to the
    webhook that wants both, nothing to one that wants ``job.rejected``; each body is the job's
    public state at that moment."""
    both = hook(project, "https://93.184.215.14/a", ["job.processing", "job.done"])
    hook(project, "https://93.184.215.14/b", ["job.rejected"])
    token, row = do(log, project, DELETE, [project.heads[0]], batch_size=1)
    got = deliveries()
    assert [(d.webhook_gid, d.event, d.job_token) for d in got] == [
        (both, "job.processing", token), (both, "job.done", token)]
    bodies = [json.loads(d.body) for d in got]
    assert [b["job"]["status"] for b in bodies] == ["processing", "done"]
    assert bodies[1]["job"]["info"] == row.info and bodies[1]["event"] == "job.done"
    assert len({d.delivery for d in got}) == 2 and all(d.status == "pending" for d in got)


def test_a_rejected_job_is_delivered_as_job_rejected(log: SyncLog, project: SeededProject):
    """A job rejected in its queue (as a cancel does) gives ``job.rejected`` with its error."""
    hook(project, "https://93.184.215.14/a", ["job.done", "job.rejected"])
    token = new_job(log, project, DELETE, [project.heads[0]])
    assert reject(token, deps=deps(log), error="boom")
    [d] = deliveries()
    assert d.event == "job.rejected" and json.loads(d.body)["job"]["info"]["error"] == "boom"


def test_a_delivery_is_signed_retried_and_every_attempt_recorded(
        log: SyncLog, project: SeededProject, private_ok: None):
    """The first attempt gets a 500 and is retried after its back-off, with the same delivery
    id; the body's HMAC-SHA256 with the secret is in ``X-Bulkjobs-Signature``; both attempts
    are recorded."""
    with receiver(500, 204) as rx:
        hook(project, rx.url, ["job.done"])
        do(log, project, DELETE, [project.heads[0]])
        [d] = deliveries()
        assert deliver_webhook(d.id) == "pending"
        assert deliver_webhook(d.id) is None  # not due yet: nothing sent
        [d] = deliveries()
        assert d.attempts == 1 and d.next_attempt_on > time.time() + wd.BACKOFF[0] - 5
        make_due(d.id)
        assert deliver_webhook(d.id) == "delivered"
    first, second = rx.got
    assert first.body == second.body == d.body.encode()
    assert first.headers["x-bulkjobs-delivery"] == second.headers["x-bulkjobs-delivery"] \
        == d.delivery
    assert first.headers["x-bulkjobs-event"] == "job.done"
    expected = hmac.new(SECRET.encode(), first.body, hashlib.sha256).hexdigest()
    assert first.headers["x-bulkjobs-signature"] == f"sha256={expected}"
    assert first.headers["content-type"] == "application/json"
    assert [a.status_code for a in attempts(d.id)] == [500, 204]
    assert deliveries()[0].status == "delivered"


def test_a_private_address_is_refused_when_the_delivery_is_sent(
        log: SyncLog, project: SeededProject, monkeypatch: pytest.MonkeyPatch):
    """A webhook whose host is (now) private is not called unless WEBHOOKS_ALLOW_PRIVATE;
    the attempt is recorded with the reason."""
    with receiver(200) as rx:
        hook(project, rx.url, ["job.done"])
        do(log, project, DELETE, [project.heads[0]])
        [d] = deliveries()
        monkeypatch.setattr(get_settings(), "webhooks_allow_private", False)
        assert deliver_webhook(d.id) == "pending"
    assert rx.got == []
    [a] = attempts(d.id)
    assert a.status_code is None and "private" in a.error


def test_a_receiver_that_never_answers_is_given_up_after_the_last_attempt(
        log: SyncLog, project: SeededProject, private_ok: None):
    """After len(BACKOFF) failed retries the delivery is ``failed`` and no longer due."""
    with receiver(503) as rx:
        hook(project, rx.url, ["job.done"])
        do(log, project, DELETE, [project.heads[0]])
        [d] = deliveries()
        for _ in range(len(wd.BACKOFF) + 1):
            make_due(d.id)
            status = deliver_webhook(d.id)
    assert status == "failed" and len(rx.got) == len(wd.BACKOFF) + 1
    with get_engine().connect() as conn:
        assert wd.due(conn, now=time.time() + 10**6) == []


def test_the_sweeper_sends_what_is_due(log: SyncLog, project: SeededProject,
                                       redis_client: Any):
    """A due delivery whose kick was lost is sent again by the sweeper (a task message on
    the deliveries' queue); one not due yet is not."""
    hook(project, "https://93.184.215.14/a", ["job.processing", "job.done"])
    do(log, project, DELETE, [project.heads[0]])
    first, later = deliveries()
    with get_write_engine().begin() as conn:
        conn.execute(update(wd.deliveries).where(wd.deliveries.c.id == later.id)
                     .values(next_attempt_on=time.time() + 600))
    assert sweep_webhooks() == 1
    with get_engine().connect() as conn:
        assert wd.due(conn, now=time.time()) == [first.id]


def test_the_sweepers_and_the_pages_statements_use_their_indexes(
        log: SyncLog, project: SeededProject):
    """``due``, ``page`` and ``expire`` reach their rows by index on an analysed table."""
    gid = hook(project, "https://93.184.215.14/a", ["job.done"])
    now = time.time()
    with get_write_engine().begin() as conn:
        conn.execute(wd.deliveries.insert(), [
            {"delivery": f"d{i:06d}", "webhook_gid": gid if i % 50 == 0 else f"w{i % 97}",
             "project_gid": project.gid, "job_token": f"t{i}", "event": "job.done",
             "body": "{}", "status": "pending" if i % 100 == 0 else "delivered",
             "attempts": 1, "next_attempt_on": now + i, "created_on": now - i}
            for i in range(5000)])
        ids = list(conn.execute(select(wd.deliveries.c.id)).scalars())
        conn.execute(wd.attempts.insert(), [
            {"delivery_id": i, "started_on": now, "duration_ms": 1.0, "status_code": 200}
            for i in ids])
        conn.execute(text("ANALYZE"))
    try:
        with captured(get_engine()) as cap, get_engine().connect() as conn:
            wd.due(conn, now=now)
            wd.page(conn, webhook_gid=gid, size=10, cursor=None)
            conn.rollback()
        with captured(get_write_engine()) as wcap:
            wd.expire(get_write_engine(), before=now - 4990)
        with get_engine().connect() as conn:
            big = frozenset({"webhook_delivery", "webhook_attempt"})
            assert violations(conn, cap, big) == []
            assert violations(conn, wcap, big) == []
        assert explained(cap) >= 3 and explained(wcap) >= 1
    finally:
        with get_write_engine().begin() as conn:
            if conn.dialect.name == "sqlite":
                conn.execute(text("DELETE FROM sqlite_stat1 WHERE tbl LIKE 'webhook%'"))
