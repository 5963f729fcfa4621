"""models.ops: worker heartbeats, queue depth, jobs by status and throughput estimates."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
from sqlalchemy import insert

from bulkjobs import keys
from models import ops
from models.engine import get_engine, get_write_engine
from models.jobs import Job
from models.seed import SeedResult

pytestmark = pytest.mark.services


@pytest.mark.parametrize(("info", "start", "end", "expected"), [
    ({"total": 100, "remaining": 0}, 0.0, 100.0, 60.0),    # ran all along: 60 of 100 s inside
    ({"total": 100, "remaining": 0}, 50.0, 90.0, 100.0),   # ran inside the window only
    ({"total": 100, "remaining": 50}, 0.0, 20.0, 0.0),     # last commit before the window
    ({"total": 100, "remaining": 0}, 95.0, 95.0, 100.0),   # instant, inside
    ({"total": 100, "remaining": 100}, 50.0, 90.0, 0.0),   # nothing processed yet
    ({}, 50.0, 90.0, 0.0),                                  # never resolved
])
def test_items_in_window_spreads_items_evenly(info, start, end, expected):
    """A job's processed items are spread over its run; the share in [40, 100] counts."""
    assert ops._items_in_window(info, start, end, 40.0, 100.0) == pytest.approx(expected)


def test_alive_workers_are_those_with_a_recent_heartbeat(redis_client):
    """A worker is alive for three heartbeat periods; a clean shutdown removes it at once."""
    now = 1_000_000.0
    ops.beat_worker(redis_client, "a@host", now=now)
    ops.beat_worker(redis_client, "b@host", now=now - 20)
    assert ops.alive_workers(redis_client, period=5, now=now) == ["a@host"]
    assert ops.alive_workers(redis_client, period=10, now=now) == ["a@host", "b@host"]
    ops.forget_worker(redis_client, "a@host")
    assert ops.alive_workers(redis_client, period=10, now=now) == ["b@host"]


def test_queue_depth_sums_the_priority_lists(redis_client, monkeypatch):
    """Waiting messages are counted over kombu's list per priority step."""
    monkeypatch.setattr(keys, "jobs_queue", lambda: f"{keys.prefix()}:depth-test")
    names = keys.jobs_queue_lists()
    redis_client.lpush(names[0], "m1", "m2")
    redis_client.lpush(names[2], "m3")
    assert ops.queue_depth(redis_client) == 3
    assert ops.queue_depth(None) is None


def _job(project: str, status: str, **values: Any) -> dict[str, Any]:
    now = time.time()
    row = dict(token=str(uuid.uuid4()), project_gid=project, job="bulk_delete_records",
               status=status, info={}, params={}, actor={}, created_on=now - 30,
               updated_on=now, heartbeat_on=now, owner=None, started_on=None, finished_on=None)
    row.update(values)  # every row has every key: an executemany takes the first row's keys
    return row


def test_stats_count_jobs_and_throughput_of_the_given_projects(seeded: SeedResult, redis_client):
    """Jobs by status and throughput cover the given projects only (all when None)."""
    p0, p1 = seeded.projects[0].gid, seeded.projects[1].gid
    now = time.time()
    with get_write_engine().begin() as conn:
        conn.execute(insert(Job), [
            _job(p0, "queued"),
            _job(p0, "processing", info={"total": 10, "remaining": 4}, owner="run-1",
                 started_on=now - 6),
            _job(p0, "done", info={"total": 30, "remaining": 0}, started_on=now - 20,
                 finished_on=now - 10, heartbeat_on=now - 10),
            _job(p1, "rejected", info={"total": 5, "remaining": 5, "error": "cancelled"},
                 finished_on=now - 5, heartbeat_on=now - 5),
        ])
    with get_engine().connect() as conn:
        mine = ops.collect(conn, client=redis_client, broker=None, projects=[p0], now=now)
        every = ops.collect(conn, client=redis_client, broker=None, projects=None, now=now)
        nothing = ops.collect(conn, client=redis_client, broker=None, projects=[], now=now)
    assert mine.jobs == {"queued": 1, "processing": 1, "done": 1, "rejected": 0}
    assert every.jobs == {"queued": 1, "processing": 1, "done": 1, "rejected": 1}
    assert nothing.jobs == {"queued": 0, "processing": 0, "done": 0, "rejected": 0}
    assert mine.throughput.items_per_s == pytest.approx((6 + 30) / 60, rel=0.05)
    assert mine.throughput.jobs_per_s == pytest.approx(1 / 60)
    assert every.throughput.jobs_per_s == pytest.approx(2 / 60)
    assert mine.busy == 1
    assert set(mine.projects) == {p0} and set(every.projects) == {p0, p1}
    body = mine.as_json()
    assert body["workers"]["busy"] == 1
    assert body["queue_depth"] is None
