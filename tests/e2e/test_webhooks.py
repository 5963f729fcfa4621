"""Webhooks end to end: the Procfile's worker process (jobs' worker and deliveries' worker)
sends the job states to real HTTP receivers on loopback; a receiver that fails its first
attempt gets the same delivery again after its back-off (the sweeper), and one that never
answers holds up no job."""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, select, update
from sqlmodel import Session

from bulkjobs.synclog import SyncLog
from models import webhook_deliveries as wd
from models.engine import get_engine, get_write_engine
from models.seed import SeedResult
from models.webhooks import create
from tests.e2e import procfile
from tests.e2e.conftest import Proc, wait_for
from tests.worker.receiver import receiver
from worker.app import enqueue
from worker.submit import submit
from worker.webhooks import sweep_webhooks

pytestmark = pytest.mark.e2e

SECRET = "e2e-webhook-secret-0123"


@pytest.fixture
def worker_proc(schema: Engine) -> Iterator[Proc]:
    """The Procfile's worker process, private webhook addresses allowed."""
    proc = procfile.worker("hooks", WEBHOOKS_ALLOW_PRIVATE="true", WEBHOOK_TIMEOUT="120",
                           WEBHOOK_CONCURRENCY="4")
    try:
        wait_for(lambda: proc.output().count("ready.") >= 2, "both workers", timeout=60)
        yield proc
    finally:
        procfile.stop_all([proc])


def status(token: str) -> str:
    with get_engine().connect() as conn:
        return str(conn.execute(select(wd.jobs.c.status).where(wd.jobs.c.token == token))
                   .scalar_one())


def by_hook(gid: str) -> list[Any]:
    with get_engine().connect() as conn:
        return list(conn.execute(select(wd.deliveries).where(
            wd.deliveries.c.webhook_gid == gid).order_by(wd.deliveries.c.id)))


def test_deliveries_are_retried_and_a_dead_receiver_slows_no_job(
        worker_proc: Proc, seeded: SeedResult, redis_client: Any) -> None:
    project = seeded.projects[0]
    log = SyncLog(redis_client)
    with receiver(500, 200) as flaky, receiver(hang=True) as dead:
        with Session(get_engine()) as session:
            flaky_gid = create(session, project_gid=project.gid, url=flaky.url,
                               events=["job.processing", "job.done"], secret=SECRET,
                               user_gid="u", allow_private=True).gid
            dead_gid = create(session, project_gid=project.gid, url=dead.url,
                              events=["job.done"], secret=SECRET, user_gid="u",
                              allow_private=True).gid
        tokens = []
        for head in project.heads[:2]:
            tokens.append(submit(project_gid=project.gid, job="bulk_delete_records",
                                 params={"selection": [head]}, actor={"type": "user", "id": "u"},
                                 log=log, enqueue=enqueue))
            wait_for(lambda: status(tokens[-1]) == "done", "job done", timeout=120)
        # Both jobs finished while the dead receiver held the deliveries sent to it.
        wait_for(lambda: len(dead.got) == 2, "the dead receiver's two requests", timeout=60)
        assert [d.status for d in by_hook(dead_gid)] == ["pending", "pending"]
        wait_for(lambda: len(flaky.got) == 4, "four first attempts", timeout=60)
        [failed] = [d for d in by_hook(flaky_gid) if d.status == "pending"]
        assert failed.attempts == 1
        with get_write_engine().begin() as conn:  # as if its back-off had passed
            conn.execute(update(wd.deliveries).where(wd.deliveries.c.id == failed.id)
                         .values(next_attempt_on=time.time() - 1))
        assert sweep_webhooks() >= 1
        wait_for(lambda: all(d.status == "delivered" for d in by_hook(flaky_gid)),
                 "the retried delivery", timeout=60)
    got = flaky.got
    assert len(got) == 5
    retried = [r for r in got if r.headers["x-bulkjobs-delivery"] == failed.delivery]
    assert len(retried) == 2 and retried[0].body == retried[1].body
    for r in got:
        mac = hmac.new(SECRET.encode(), r.body, hashlib.sha256).hexdigest()
        assert r.headers["x-bulkjobs-signature"] == f"sha256={mac}"
    assert sorted(r.headers["x-bulkjobs-event"] for r in got) == sorted(
        ["job.processing"] * 2 + ["job.done"] * 2 + [retried[0].headers["x-bulkjobs-event"]])
