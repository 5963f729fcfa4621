"""Webhook deliveries: written in the job's own transactions, signed, retried with back-off,
every attempt recorded (models.webhook_deliveries, worker.webhooks)."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import socket
import time
from typing import Any

import pytest
from sqlalchemy import func, select, text, update
from sqlmodel import Session

from bulkjobs.settings import get_settings
from bulkjobs.synclog import SyncLog
from models import webhook_deliveries as wd
from models.engine import get_engine, get_write_engine
from models.seed import SeededProject
from models.webhooks import create
from tests.plans import captured, explained, violations
from tests.worker.helpers import deps, do, new_job
from tests.worker.receiver import DRIP, DRIP_ANSWER, DRIP_PAUSE, receiver
from worker.__main__ import deliveries_hostname
from worker.tasks import expire_jobs
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


def test_an_answer_dripped_a_byte_at_a_time_is_cut_off_at_the_deadline(
        log: SyncLog, project: SeededProject, private_ok: None,
        monkeypatch: pytest.MonkeyPatch):
    """WEBHOOK_TIMEOUT bounds the whole attempt, not each read: a receiver that drips its
    answer (a 200 in the end, some 25 s later) gets a time-out failure, due again after the
    first back-off."""
    monkeypatch.setattr(get_settings(), "webhook_timeout", 1.0)
    with receiver(DRIP) as rx:
        hook(project, rx.url, ["job.done"])
        do(log, project, DELETE, [project.heads[0]])
        [d] = deliveries()
        assert deliver_webhook(d.id) == "pending"
    assert len(rx.got) == 1
    [a] = attempts(d.id)
    assert a.status_code is None and a.error.startswith("timed out"), a.error
    assert a.duration_ms < len(DRIP_ANSWER) * DRIP_PAUSE * 1000 / 2  # liveness: not the drip
    with get_engine().connect() as conn:
        assert wd.due(conn, now=time.time()) == []
        assert wd.due(conn, now=time.time() + wd.BACKOFF[0] + 1) == [d.id]


def resolving(monkeypatch: pytest.MonkeyPatch, name: str, *addresses: str) -> list[str]:
    """``name`` resolves to ``addresses[0]`` the first time, to the next one the next time
    and so on (the last repeated); the lookups made of it."""
    real, lookups = socket.getaddrinfo, []

    def getaddrinfo(host: str, port: object, *args: object, **kwargs: object) -> list[Any]:
        if host != name:
            return real(host, port, *args, **kwargs)  # type: ignore[arg-type]
        address = addresses[min(len(lookups), len(addresses) - 1)]
        lookups.append(host)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return lookups


def test_an_attempt_connects_to_the_address_it_checked(
        log: SyncLog, project: SeededProject, monkeypatch: pytest.MonkeyPatch):
    """The host is looked up once per attempt: a name that resolves to a public address for
    the check and to loopback a moment later (DNS rebinding) is sent to the public address,
    never to the receiver on loopback."""
    monkeypatch.setattr(get_settings(), "webhook_timeout", 1.0)
    with receiver(200, host="rebinding.example") as rx:
        hook(project, rx.url, ["job.done"])
        do(log, project, DELETE, [project.heads[0]])
        [d] = deliveries()
        lookups = resolving(monkeypatch, "rebinding.example", "93.184.215.14", "127.0.0.1")
        assert deliver_webhook(d.id) == "pending"
    assert rx.got == [] and lookups == ["rebinding.example"]
    [a] = attempts(d.id)
    assert a.status_code is None and "93.184.215.14" in a.error, a.error


def test_a_named_host_is_connected_to_by_address_and_named_in_the_host_header(
        log: SyncLog, project: SeededProject, private_ok: None,
        monkeypatch: pytest.MonkeyPatch):
    """With private addresses allowed, a name that resolves to loopback is delivered to
    there, looked up once, with ``Host`` naming the URL's host and port."""
    with receiver(204, host="receiver.example") as rx:
        hook(project, rx.url, ["job.done"])
        do(log, project, DELETE, [project.heads[0]])
        [d] = deliveries()
        lookups = resolving(monkeypatch, "receiver.example", "127.0.0.1")
        assert deliver_webhook(d.id) == "delivered"
    [got] = rx.got
    assert got.headers["host"] == rx.url.split("/")[2] and lookups == ["receiver.example"]


def test_deliveries_go_with_their_job_after_job_retention_days(
        log: SyncLog, project: SeededProject, private_ok: None):
    """``expire_jobs`` removes a job that ended JOB_RETENTION_DAYS ago with its deliveries
    and their attempts; a recent job's stay."""
    with receiver(200) as rx:
        hook(project, rx.url, ["job.processing", "job.done"])
        old, _ = do(log, project, DELETE, [project.heads[0]])
        recent, _ = do(log, project, DELETE, [project.heads[1]])
        assert [deliver_webhook(d.id) for d in deliveries()] == ["delivered"] * 4
    age = get_settings().job_retention_days * 86_400 + 60
    with get_write_engine().begin() as conn:
        conn.execute(update(wd.jobs).where(wd.jobs.c.token == old).values(
            finished_on=wd.jobs.c.finished_on - age))
        conn.execute(update(wd.deliveries).where(wd.deliveries.c.job_token == old).values(
            created_on=wd.deliveries.c.created_on - age))
    gone = [d.id for d in deliveries() if d.job_token == old]
    assert expire_jobs() == 1
    assert {d.job_token for d in deliveries()} == {recent}
    with get_engine().connect() as conn:
        assert conn.execute(select(func.count()).select_from(wd.attempts).where(
            wd.attempts.c.delivery_id.in_(gone))).scalar_one() == 0
        assert conn.execute(select(func.count()).select_from(wd.attempts)).scalar_one() == 2
        assert conn.execute(select(wd.jobs.c.token)).scalars().all() == [recent]


@pytest.mark.parametrize(("argv", "name"), [
    (["-E", "--hostname", "worker-8001@%h"], "webhooks-worker-8001@%h"),
    (["--hostname=worker-a@%h", "-E"], "webhooks-worker-a@%h"),
    (["-n", "w1@host"], "webhooks-w1@host"),
    (["-nw2@host"], "webhooks-w2@host"),
])
def test_the_deliveries_worker_is_named_after_the_jobs_worker(argv: list[str], name: str):
    """Two worker processes on one host (``worker-${PORT}@%h``) never share a deliveries'
    worker name."""
    assert deliveries_hostname(argv) == name


def test_without_a_jobs_worker_name_the_deliveries_worker_takes_its_process_id():
    """No ``--hostname``: the deliveries' worker is named after this process's id."""
    assert deliveries_hostname(["-E", "--loglevel", "INFO"]) == f"webhooks-{os.getpid()}@%h"
