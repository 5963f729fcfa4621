"""One job's events read back from the ``cc`` space (``bulkjobs.synclog.history``) against
the real Redis: the read starts near the job's creation from the minute marks, and says when
the job's history is not whole any more."""

from __future__ import annotations

import json

import pytest
import redis

from bulkjobs.synclog import NewEvent, SyncLog, job_event
from bulkjobs.synclog.history import job_events, start_cursor
from tests.test_synclog import PROJECT, FakeClock, job

pytestmark = pytest.mark.services

BASE = 29_000_000  # a minute (epoch minutes)


@pytest.fixture
def log(redis_client: redis.Redis) -> SyncLog:
    return SyncLog(redis_client, dedupe_ttl=60)


def insert(token: str) -> NewEvent:
    return job_event(token=token, project=PROJECT, job="bulk_delete_records", status="queued",
                     info={}, created_on=0.0, updated_on=0.0, insert=True)


def test_job_events_are_the_jobs_own_from_its_minute_on(
    log: SyncLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Other jobs' events are skipped; the read starts at the mark of the minute before the
    job's (not at the oldest event); the job's events come in cursor order, complete from
    its INSERT to its terminal event."""
    clock = FakeClock(monkeypatch, 0)
    clock.at_minute(BASE)
    early = log.append("cc", [job(token=f"old{i}") for i in range(5)])
    clock.at_minute(BASE + 10)
    before = log.append("cc", [job(token="other")])
    clock.at_minute(BASE + 11)
    mine = log.append("cc", [insert("tok"), job(token="other"), job(token="tok"),
                             job(token="tok", status="done")])
    log.append("cc", [job(token="tok", status="done")])  # after its end: not read
    created = (BASE + 11) * 60 + 5
    assert start_cursor(log, created) == before[0] - 1 == early[-1]  # not early[0] - 1
    history = job_events(log, "tok", created_on=created)
    assert [e.cursor for e in history.events] == [mine[0], mine[2], mine[3]]
    assert [json.loads(e.body)["data"]["status"] for e in history.events] == [
        "queued", "processing", "done"]
    assert history.complete is True


def test_job_events_are_incomplete_without_the_insert_or_beyond_the_bound(
    log: SyncLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A job whose INSERT event is not in the log (trimmed) and a scan stopped by its bound
    report ``complete`` false, with the events they found."""
    clock = FakeClock(monkeypatch, 0)
    clock.at_minute(BASE)
    log.append("cc", [job(token="tok")])
    partial = job_events(log, "tok", created_on=BASE * 60)
    assert len(partial.events) == 1 and partial.complete is False
    log.append("cc", [insert("late")])
    log.append("cc", [job(token=f"n{i}") for i in range(3000)])
    log.append("cc", [job(token="late", status="done")])
    bounded = job_events(log, "late", created_on=BASE * 60, max_scanned=1000)
    assert len(bounded.events) == 1 and bounded.complete is False
    whole = job_events(log, "late", created_on=BASE * 60)
    assert len(whole.events) == 2 and whole.complete is True
