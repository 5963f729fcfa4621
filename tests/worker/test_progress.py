"""The progress publisher (``worker/progress.py``) against the real Redis sync log, and the
cadence of SPEC §6 through the runner's heartbeat."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Sequence
from dataclasses import replace

import pytest
import redis
from sqlalchemy import Connection

from bulkjobs import keys
from bulkjobs.synclog import SyncLog
from models.seed import SeedResult
from tests.worker.deployment import wait_for
from tests.worker.helpers import cfg, deps, new_job, space_events
from worker.jobs import CATALOGUE, Context, Failure
from worker.progress import JobState, Publisher
from worker.runner import run

pytestmark = pytest.mark.services

DELETE = "bulk_delete_records"


def state(token: str, status: str, remaining: int) -> JobState:
    return JobState(token, "project", "bulk_delete_records", status,
                    {"total": 10, "remaining": remaining}, 1.0, 2.0)


def test_closed_publisher_drops_progress_but_not_the_terminal_event(redis_client) -> None:
    """After close() no progress event is appended, forced or not (a heartbeat's late one
    cannot follow the terminal event); the terminal event still is."""
    log = SyncLog(redis_client, dedupe_ttl=600)
    token = str(uuid.uuid4())
    publisher = Publisher(log, interval=0.0)
    assert publisher.publish(state(token, "processing", 10), force=True)
    publisher.close()
    assert not publisher.publish(state(token, "processing", 4), force=True)
    assert publisher.publish(state(token, "done", 0))
    statuses = [(e["data"]["status"], e["data"]["info"]["remaining"])
                for e in space_events(log, keys.CC_SPACE, token)]
    assert statuses == [("processing", 10), ("done", 0)]


def test_progress_is_rate_limited_and_never_rises(redis_client) -> None:
    """Within the interval only forced or terminal states go out, and a state with more
    remaining than already announced is dropped (SPEC §6)."""
    log = SyncLog(redis_client, dedupe_ttl=600)
    token = str(uuid.uuid4())
    publisher = Publisher(log, interval=3600.0)
    assert publisher.publish(state(token, "processing", 10), force=True)
    assert not publisher.publish(state(token, "processing", 8))  # within the interval
    assert publisher.publish(state(token, "processing", 6), force=True)
    assert not publisher.publish(state(token, "processing", 7), force=True)  # would rise
    assert publisher.publish(state(token, "done", 0))
    remaining = [e["data"]["info"]["remaining"] for e in space_events(log, keys.CC_SPACE, token)]
    assert remaining == [10, 6, 0]


def test_a_slow_batch_still_gets_a_progress_event_every_second(
    redis_client: redis.Redis, seeded: SeedResult, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """While one batch is held up inside its transaction (it holds the database's write
    lock on SQLite), the heartbeat keeps publishing the job's progress: several
    ``processing`` events with nothing done yet, one about every second, before the batch
    commits.  Then the job finishes: ``remaining`` never rose, one terminal event, last."""
    log = SyncLog(redis_client, dedupe_ttl=600)
    project = seeded.projects[0]
    spec = CATALOGUE[DELETE]
    release = threading.Event()

    def held(conn: Connection, ctx: Context, ids: Sequence[int]) -> list[Failure]:
        failures = spec.batch(conn, ctx, ids)
        release.wait(120)  # a slow batch, for as long as the test wants
        return failures

    monkeypatch.setitem(CATALOGUE, DELETE, replace(spec, batch=held))
    heads = project.heads[:2]
    token = new_job(log, project, DELETE, heads)
    outcome: list[str] = []
    runner = threading.Thread(target=lambda: outcome.append(run(
        token, deps=deps(log), cfg=cfg(batch_size=1), requeue=pytest.fail)))
    runner.start()

    def untouched() -> list[dict]:  # processing events from before the first commit
        return [e for e in space_events(log, keys.CC_SPACE, token)
                if e["data"]["status"] == "processing"
                and e["data"]["info"]["remaining"] == len(heads)]

    try:
        # the start event, then three from the heartbeat while the batch is held
        wait_for(lambda: len(untouched()) >= 4, "heartbeat progress during a slow batch",
                 timeout=60)
    finally:
        release.set()
        runner.join(60)
    assert outcome == ["done"]
    events = space_events(log, keys.CC_SPACE, token)
    statuses = [e["data"]["status"] for e in events]
    assert statuses[0] == "queued" and statuses[-1] == "done" and statuses.count("done") == 1
    remaining = [e["data"]["info"]["remaining"] for e in events[1:]]
    assert remaining == sorted(remaining, reverse=True)
