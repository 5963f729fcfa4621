"""Redis going away under a running job (``worker/runner.py``, "The database or Redis
away"): a private ``redis-server`` with an append-only file written on every command is the
sync log *and* the broker of a real worker process; it is frozen for a while, later killed
and started again on the same port and data.  The job is not at fault: it is handed back
without counting a failure, retried once Redis answers, and ends ``done`` with every record
deleted once and each of its events in the log once."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from bulkjobs import keys
from bulkjobs.settings import get_settings
from bulkjobs.synclog import SyncLog, decode
from models.seed import SeedResult
from tests.e2e.redis_server import PrivateRedis, private_redis_server
from tests.worker.deployment import Deployment, wait_for
from tests.worker.helpers import assert_consistent, entries, records
from worker.app import make_celery

pytestmark = [pytest.mark.e2e, pytest.mark.heavy]

DELETE = "bulk_delete_records"


@pytest.fixture
def server() -> Iterator[PrivateRedis]:
    with private_redis_server(persistent=True) as server:
        yield server


@pytest.fixture
def deployment(server: PrivateRedis, seeded: SeedResult) -> Iterator[Deployment]:
    """Worker processes whose Redis and broker are the private server."""
    client = redis.Redis.from_url(server.url, socket_timeout=5)
    settings = get_settings().model_copy(update={"redis_url": server.url,
                                                 "broker_url": server.url})
    dep = Deployment(redis_url=server.url, client=client, log=SyncLog(client, dedupe_ttl=3600),
                     app=make_celery(settings))
    try:
        yield dep
    finally:
        dep.close()


def processed(dep: Deployment, token: str) -> int:
    info = dep.row(token).info or {}
    total, remaining = info.get("total"), info.get("remaining")
    return total - remaining if isinstance(total, int) and isinstance(remaining, int) else 0


def stream_events(server: PrivateRedis, space: str) -> list[dict[str, Any]]:
    """Every event still in a space's stream, in cursor order — below the floor too: the
    restart moved the floor above what came before (a reader is told to reload), but the
    entries are all there."""
    return [e.as_dict() for e in decode(space, server.client().xrange(keys.sync_stream(space)))]


@pytest.mark.timeout(300)
def test_a_job_rides_out_redis_frozen_and_restarted(
    deployment: Deployment, server: PrivateRedis, seeded: SeedResult,
) -> None:
    """Redis frozen (SIGSTOP) for a few seconds, then killed (SIGKILL) and started again on
    its data mid-job: the job ends ``done`` with no failure counted, one workflow entry per
    record, one DELETE event per record, one ``queued`` and one terminal event."""
    project = seeded.projects[0]
    recs = records(project.gid)
    targets = sorted((g for g, r in recs.items() if r.treelevel == 3 and r.status != "deleted"),
                     key=lambda g: recs[g].id)  # some 800 leaves, a few per batch
    deployment.worker("redis-outage", BATCH_SIZE="4", SLICE_SECONDS="1000",
                      RECORD_EVENTS="true")
    token = deployment.submit(project.gid, DELETE, targets)

    wait_for(lambda: processed(deployment, token) > 40, "progress before the freeze", 60)
    server.freeze()
    time.sleep(4)  # longer than the workers' Redis socket timeout
    server.thaw()
    after_thaw = processed(deployment, token)
    wait_for(lambda: processed(deployment, token) > after_thaw + 40,
             "progress after the freeze", 60)
    server.kill()
    time.sleep(3)
    server.start()  # same port, same append-only file

    # A liveness bound, not a speed test; no reaper: the worker itself sees the job through.
    row = deployment.wait_finished([token], timeout=150, reap_every=None)[token]
    assert row.status == "done", row.info
    assert row.failures == 0 and "error" not in row.info
    assert (row.info["total"], row.info["remaining"], row.info["failed"]) == (len(targets), 0, 0)
    after = records(project.gid)
    assert all(after[g].status == "deleted" for g in targets)
    assert len(entries(token, "delete")) == len(targets)
    assert_consistent(project.gid)

    deletes = Counter(e["data_key"] for e in stream_events(server, project.gid)
                      if e["action"] == "DELETE")
    assert set(deletes) == set(targets) and set(deletes.values()) == {1}
    statuses = [e["data"]["status"] for e in stream_events(server, keys.CC_SPACE)
                if e["data_key"] == token]
    assert statuses.count("queued") == 1 and statuses[0] == "queued"
    assert statuses.count("done") == 1 and statuses[-1] == "done"
    assert "rejected" not in statuses
