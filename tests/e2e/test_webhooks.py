"""Webhooks end to end: the Procfile's worker process (jobs' worker and deliveries' worker)
sends the job states to real HTTP receivers on loopback; a receiver that fails its first
attempts gets the same delivery again after its back-off (beat's sweep), and one that never
answers holds up no job."""

from __future__ import annotations

import asyncio
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
from tests.e2e.conftest import Proc, free_port, wait_for
from tests.e2e.helpers import Api, Subscriber, terminal_of
from tests.worker.receiver import DRIP, receiver
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


#: The whole system's settings: receivers on loopback, a 2 s deadline, retries 0.5 s and 1 s
#: after the first two failures (then beat's next sweep, every 5 s, sends them).
HOOKS_ENV = {"WEBHOOKS_ALLOW_PRIVATE": "true", "WEBHOOK_TIMEOUT": "2",
             "WEBHOOK_BACKOFF_BASE": "0.5"}


@pytest.fixture
def whole_system(seeded: SeedResult) -> Iterator[dict[str, Any]]:
    """Web, worker, beat and stream, each from its Procfile command, with :data:`HOOKS_ENV`."""
    web_port, stream_port = free_port(), free_port()
    procs: list[Proc] = []
    try:
        procs.append(procfile.web(web_port, STREAM_PORT=str(stream_port), **HOOKS_ENV))
        procs.append(worker := procfile.worker("hooks-all", **HOOKS_ENV))
        wait_for(lambda: worker.output().count("ready.") >= 2, "both workers", timeout=60,
                 proc=worker)
        procs.append(beat := procfile.start("beat", "beat-hooks", **HOOKS_ENV))
        wait_for(lambda: "beat: Starting..." in beat.output(), "beat", timeout=60, proc=beat)
        procs.append(procfile.stream(stream_port))
        yield {"web": f"http://127.0.0.1:{web_port}",
               "stream": f"ws://127.0.0.1:{stream_port}/sync", "beat": beat, "worker": worker}
    finally:
        procfile.stop_all(procs)


def test_a_job_queued_over_http_is_delivered_after_beat_retries_a_500_and_a_timeout(
        whole_system: dict[str, Any], seeded: SeedResult) -> None:
    """A webhook made over HTTP by the project's owner gets a job's ``job.processing`` and
    ``job.done``; its receiver answers each delivery's first attempt with 500 and drips its
    second past WEBHOOK_TIMEOUT; beat's sweep sends each again after its back-off, the same
    delivery id and signed body every time, until the third is taken; ``webhooks/deliveries``
    lists the three attempts of each with status and duration."""
    project = seeded.projects[0]
    api = Api(whole_system["web"], project.gid)
    assert api.auth(project.api_key)["success"]  # the API key is the owner's
    with receiver(500, DRIP, 200, per_delivery=True) as rx:
        made = api.call("webhooks/create", {"url": rx.url, "secret": SECRET,
                                            "events": ["job.processing", "job.done"]})
        assert made["success"], made
        gid = made["result"]["webhook"]["gid"]

        async def run_job() -> str:
            async with Subscriber(whole_system["stream"], api.jwt) as sub:
                await sub.subscribe(project.gid, cc_cursor=api.cc_cursor())
                token = api.queue("records/bulk/delete", [project.heads[0]])
                await sub.until(terminal_of(token), timeout=120)
                return token

        token = asyncio.run(run_job())

        def listed() -> list[dict[str, Any]]:
            answer = api.call("webhooks/deliveries", {"webhook": gid})
            assert answer["success"], answer
            return list(answer["result"]["deliveries"])

        wait_for(lambda: [d["status"] for d in listed()] == ["delivered"] * 2,
                 "both deliveries delivered", timeout=180)
    got = rx.got
    ids = sorted({r.headers["x-bulkjobs-delivery"] for r in got})
    assert len(ids) == 2 and len(got) == 6
    for delivery in ids:
        tries = [r for r in got if r.headers["x-bulkjobs-delivery"] == delivery]
        assert [r.answer for r in tries] == [500, DRIP, 200]
        assert len({r.body for r in tries}) == 1
    for r in got:
        mac = hmac.new(SECRET.encode(), r.body, hashlib.sha256).hexdigest()
        assert r.headers["x-bulkjobs-signature"] == f"sha256={mac}"
    taken = sorted(r.headers["x-bulkjobs-event"] for r in got if r.answer == 200)
    assert taken == ["job.done", "job.processing"]
    deliveries = listed()
    assert sorted(d["event"] for d in deliveries) == ["job.done", "job.processing"]
    assert {d["delivery"] for d in deliveries} == set(ids)
    for d in deliveries:
        assert d["job"] == token and d["next_attempt_on"] is None
        tried = d["attempts"]
        assert [a["status_code"] for a in tried] == [500, None, 200]
        assert [a["error"] for a in tried][0::2] == ["HTTP 500", None]
        assert tried[1]["error"].startswith("timed out")
        assert all(a["duration_ms"] > 0 for a in tried)
    assert "Sending due task sweep-webhooks" in whole_system["beat"].output()
    # The deliveries' worker is named after the worker process's jobs' worker.
    assert " webhooks-worker-hooks-all@" in whole_system["worker"].output()
