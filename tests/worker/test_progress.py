"""The progress publisher (``worker/progress.py``) against the real Redis sync log."""

from __future__ import annotations

import uuid

import pytest

from bulkjobs import keys
from bulkjobs.synclog import SyncLog
from tests.worker.helpers import space_events
from worker.progress import JobState, Publisher

pytestmark = pytest.mark.services


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
