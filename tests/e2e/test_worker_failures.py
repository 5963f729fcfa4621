"""Worker failures seen from outside: jobs queued over HTTP through the real web process,
run by real Celery workers that are SIGKILLed or cancelled mid-job, watched live by a
websocket subscriber of the real stream server.

These tests use workers of their own (short ``STALE_AFTER``, one item per batch) and stop the
session's shared worker meanwhile, so that they know which process runs the job; the test
plays the reaper (``worker.reaper.reap``), as ``celery beat`` would."""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import select, text

from bulkjobs.connections import get_synclog
from models import Job
from models.engine import get_engine
from models.seed import SeedResult
from tests.e2e.conftest import Proc, System
from tests.e2e.helpers import Api, Subscriber, assert_lifecycle, job_events, terminal_of
from worker.app import enqueue
from worker.reaper import reap

pytestmark = pytest.mark.e2e

OWN = {"STALE_AFTER": "2", "BATCH_SIZE": "1", "SLICE_SECONDS": "5"}


@pytest.fixture
def own_workers(system: System) -> Iterator[System]:
    """The session's shared worker stopped for the test (and started again after it)."""
    shared = system.procs.get("worker")
    if shared is not None:
        shared.stop()
    try:
        yield system
    finally:
        for name in [n for n in system.procs if n.startswith("own-")]:
            system.procs.pop(name).stop(signal.SIGKILL)
        system.worker()


def leaves(project_gid: str) -> list[str]:
    with get_engine().connect() as conn:
        return list(conn.execute(text(
            "SELECT r.gid FROM record r WHERE r.project_gid = :p AND r.treelevel = 3 "
            "AND NOT EXISTS (SELECT 1 FROM record_deletion d WHERE d.record_id = r.id) "
            "ORDER BY r.id"), {"p": project_gid}).scalars())


def remaining(token: str) -> int | None:
    with get_engine().connect() as conn:
        info = conn.execute(select(Job.info).where(Job.token == token)).scalar()
    value = (info or {}).get("remaining")
    return value if isinstance(value, int) else None


class Reaper:
    """The reaper every half second in a thread, as beat would run it (stale after 2 s)."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Reaper:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(10)

    def _run(self) -> None:
        while not self.stop.wait(0.5):
            reap(log=get_synclog(), stale_after=2.0, queued_stale_after=120.0,
                 requeue=enqueue)


async def wait_remaining(token: str, below: int, timeout: float = 120) -> int:
    deadline = time.monotonic() + timeout
    while True:
        left = remaining(token)
        if left is not None and left <= below:
            return left
        assert time.monotonic() < deadline, f"job {token}: remaining never reached {below}"
        await asyncio.sleep(0.02)


@pytest.mark.heavy
def test_sigkilled_workers_mid_job_subscriber_sees_one_clean_lifecycle(
    own_workers: System, seeded: SeedResult
) -> None:
    """A bulk delete queued over HTTP whose worker is SIGKILLed twice mid-job (a new worker
    started each time): the websocket subscriber sees queued → processing (total =
    remaining) → progress with ``remaining`` never rising → exactly one ``done``, and every
    item was processed exactly once."""
    system = own_workers
    project = seeded.projects[0]
    api = Api(system.web_url, project.gid)
    api.auth(project.api_key)
    targets = leaves(project.gid)
    workers: list[Proc] = [system.worker("own-0", **OWN)]

    async def scenario() -> list[dict[str, Any]]:
        async with Subscriber(system.stream_url, api.jwt) as sub:
            await sub.subscribe(project.gid, cc_cursor=api.cc_cursor())
            token = api.queue("records/bulk/delete", targets)
            left = len(targets)
            for kill in range(2):
                left = await wait_remaining(token, left - 20)
                assert left > 0
                workers[-1].stop(signal.SIGKILL)
                workers.append(system.worker(f"own-{kill + 1}", **OWN))
            await sub.until(terminal_of(token), timeout=180)
            return job_events(sub.events, token)

    with Reaper():
        events = asyncio.run(scenario())
    token = events[0]["data_key"]
    assert_lifecycle(events, token, total=len(targets))
    assert events[-1]["data"]["info"]["failed"] == 0
    with get_engine().connect() as conn:
        deleted = conn.execute(text(
            "SELECT COUNT(*) FROM record r JOIN record_deletion d ON d.record_id = r.id "
            "WHERE r.project_gid = :p AND r.treelevel = 3 AND d.deleted_root = r.id"),
            {"p": project.gid}).scalar_one()
        entries = conn.execute(text(
            "SELECT COUNT(*), COUNT(DISTINCT record_id) FROM workflow_entry "
            "WHERE action = 'delete' AND comment LIKE :c"), {"c": f"%{token}%"}).one()
    assert deleted == len(targets)
    assert tuple(entries) == (len(targets), len(targets))


def test_cancel_over_http_stops_the_running_job(own_workers: System,
                                                seeded: SeedResult) -> None:
    """``jobs/cancel`` on a running job: the subscriber's last event for it is ``rejected``
    with ``info.error == "cancelled"``, and exactly ``total - remaining`` items changed."""
    system = own_workers
    project = seeded.projects[1]
    api = Api(system.web_url, project.gid)
    api.auth(project.api_key)
    targets = leaves(project.gid)
    system.worker("own-cancel", **OWN)

    async def scenario() -> list[dict[str, Any]]:
        async with Subscriber(system.stream_url, api.jwt) as sub:
            await sub.subscribe(project.gid, cc_cursor=api.cc_cursor())
            token = api.queue("records/bulk/delete", targets)
            await wait_remaining(token, len(targets) - 3)
            answer = api.call("jobs/cancel", {"job": token})
            assert answer["success"], answer
            await sub.until(terminal_of(token), timeout=60)
            return job_events(sub.events, token)

    events = asyncio.run(scenario())
    last = events[-1]["data"]
    assert (last["status"], last["info"]["error"]) == ("rejected", "cancelled")
    assert [e["data"]["status"] for e in events].count("rejected") == 1
    processed = last["info"]["total"] - last["info"]["remaining"]
    assert 3 <= processed < len(targets)
    with get_engine().connect() as conn:
        deleted = conn.execute(text(
            "SELECT COUNT(*) FROM record r JOIN record_deletion d ON d.record_id = r.id "
            "WHERE r.project_gid = :p AND r.treelevel = 3 AND d.deleted_root = r.id"),
            {"p": project.gid}).scalar_one()
    assert deleted == processed
