"""bulkjobs.metrics: cluster counters in Redis — exact item counts from absolute job states,
a terminal state counted once, the duration histogram, and the sync log's event counter."""

from __future__ import annotations

import pytest

from bulkjobs import keys, metrics
from bulkjobs.synclog import SyncLog, record_event
from worker.progress import JobState, append_state

pytestmark = pytest.mark.services


@pytest.mark.parametrize(("info", "expected"), [
    ({}, 0),
    ({"total": 10, "remaining": 10}, 0),
    ({"total": 10, "remaining": 4}, 6),
    ({"total": 10, "remaining": 0, "failed": 3}, 10),
    ({"total": "10", "remaining": 0}, 0),
])
def test_processed_is_total_minus_remaining(info, expected):
    """Items processed come from the absolute state; anything malformed counts nothing."""
    assert metrics.processed(info) == expected


@pytest.mark.parametrize(("seconds", "index"), [
    (0.0, 0), (0.1, 0), (0.11, 1), (59.0, 8), (3600.0, 11), (3600.5, 12), (1e9, 12),
])
def test_bucket_index_puts_bounds_in_their_own_bucket(seconds, index):
    """A duration equal to a bound belongs to that bound's bucket (Prometheus ``le``)."""
    assert metrics.bucket_index(seconds) == index


def _state(status: str, total: int | None, remaining: int | None, token: str = "t1",
           updated: float = 102.0) -> JobState:
    info = {} if total is None else {"total": total, "remaining": remaining}
    return JobState(token, "p", "bulk_delete_records", status, info, 100.0, updated)


def test_progress_is_counted_once_across_repeats_and_runs(redis_client):
    """Repeated and re-published states add nothing; each item is counted exactly once, and
    the terminal state adds the finished job and its duration."""
    def record(state: JobState) -> None:
        metrics.job_state(redis_client, token=state.token, job=state.job, status=state.status,
                          info=state.info, duration=state.updated_on - state.created_on,
                          terminal=state.terminal)

    for state in (_state("queued", None, None), _state("processing", 9, 9),
                  _state("processing", 9, 6), _state("processing", 9, 6),
                  _state("processing", 9, 3), _state("processing", 9, 6),  # stale, ignored
                  _state("done", 9, 0)):
        record(state)
    totals = metrics.read(redis_client)
    assert totals.items == {"bulk_delete_records": 9}
    assert totals.finished == {("bulk_delete_records", "done"): 1}
    assert sum(totals.duration_buckets["bulk_delete_records"]) == 1
    assert totals.duration_buckets["bulk_delete_records"][metrics.bucket_index(2.0)] == 1
    assert totals.duration_sum["bulk_delete_records"] == pytest.approx(2.0)
    assert not redis_client.hexists(keys.metrics_progress(), "t1")


def test_terminal_state_appended_twice_is_counted_once(redis_client):
    """append_state counts what it appended: the once-key keeps a re-announced terminal
    state out of the log and out of the counters."""
    log = SyncLog(redis_client)
    append_state(log, _state("done", 4, 0, token="t2"))
    append_state(log, _state("done", 4, 0, token="t2"))
    totals = metrics.read(redis_client)
    assert totals.finished == {("bulk_delete_records", "done"): 1}
    assert totals.items == {"bulk_delete_records": 4}


def test_events_appended_are_counted_by_space_kind(redis_client):
    """The sync log's append script counts events: cc and project spaces apart."""
    log = SyncLog(redis_client)
    append_state(log, _state("queued", None, None, token="t3"))
    log.append("some-project", [record_event(project="some-project", data_type="records",
                                             gid=f"g{i}", action="UPDATE") for i in range(5)])
    assert metrics.read(redis_client).events == {"cc": 1, "project": 5}


def test_read_skips_damaged_fields(redis_client):
    """A foreign field in the hash never breaks a scrape."""
    redis_client.hset(keys.metrics(), mapping={"items:x": "nope", "items:y": "3", "junk": "1"})
    assert metrics.read(redis_client).items == {"y": 3}
