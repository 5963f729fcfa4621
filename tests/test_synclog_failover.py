"""The sync log through a Redis failover ("Failover" in the contract of :mod:`bulkjobs.synclog`,
:mod:`bulkjobs.synclog.replicas`): with ``SYNC_REPLICAS`` an event counts as written only once a
replica holds it, and a replica promoted by Sentinel goes on with the history it replicated —
same counter, same floor, every event there, ``recovered: true``.  (A restart from disk still
counts as a restart: ``tests/test_synclog.py``.)"""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Iterator

import pytest
import redis
import redis.sentinel

from bulkjobs import keys
from bulkjobs.synclog import NotReplicated, SyncLog, job_event, record_event
from tests.sentinel import MASTER, SentinelCluster, sentinel_cluster

pytestmark = pytest.mark.services


@pytest.fixture
def cluster() -> Iterator[SentinelCluster]:
    with sentinel_cluster() as c:
        yield c


def sentinel_log(cluster: SentinelCluster, replicas: int = 1) -> SyncLog:
    """A sync log on the primary the sentinels name (asked anew on each connection)."""
    sentinel = redis.sentinel.Sentinel([("127.0.0.1", s.port) for s in cluster.sentinels],
                                       socket_timeout=2)
    client = sentinel.master_for(MASTER, socket_timeout=5, socket_connect_timeout=2)
    return SyncLog(client, replicas=replicas, replica_timeout=2)


def job(token: str, status: str) -> list:  # type: ignore[type-arg]
    now = time.time()
    return [job_event(token=token, project="p", job="bulk_delete_records", status=status,
                      info={}, created_on=now, updated_on=now)]


def until_primary(log: SyncLog, space: str, timeout: float = 30) -> tuple[int, int]:
    """The space's cursors once the new primary answers."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return log.cursors(space)
        except redis.RedisError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


@pytest.mark.heavy
@pytest.mark.timeout(180)
def test_a_failover_keeps_every_event_and_the_cursors_count_on(cluster: SentinelCluster) -> None:
    """Events appended (job events one by one, record events packed) before the primary is
    SIGKILLed are all on the promoted replica; its counter and floor are those of before, a
    read from before them answers ``recovered: true`` with every event, and the next append
    takes the next cursor."""
    log = sentinel_log(cluster)
    project = str(uuid.uuid4())
    cc_start, project_start = log.cursor(keys.CC_SPACE), log.cursor(project)
    tokens = [str(uuid.uuid4()) for _ in range(40)]
    cc = [c for t in tokens for c in log.append(keys.CC_SPACE, job(t, "queued"))]
    gids = [str(uuid.uuid4()) for _ in range(3000)]
    records = log.append_records(project, [("record", "DELETE", gids)])
    single = log.append(project, [record_event(project=project, data_type="record",
                                               gid=gids[0], action="UPDATE")])
    before = {space: log.cursors(space) for space in (keys.CC_SPACE, project)}

    old = cluster.kill_primary()
    cluster.wait_failover(old)
    after = sentinel_log(cluster)
    assert until_primary(after, keys.CC_SPACE) == before[keys.CC_SPACE]
    assert after.cursors(project) == before[project]

    page = after.read(keys.CC_SPACE, cc_start, count=1000)
    assert page.recovered
    assert [e.cursor for e in page.events] == cc
    assert [e.as_dict()["data_key"] for e in page.events] == tokens
    page = after.read(project, project_start, count=10_000)
    assert page.recovered
    assert [e.cursor for e in page.events] == [*records, *single]
    assert [e.as_dict()["data_key"] for e in page.events] == [*gids, gids[0]]
    # a reader from the middle of the packed entry, too
    page = after.read(project, records[1500], count=10_000)
    assert page.recovered and page.events[0].cursor == records[1500] + 1

    assert after.append(keys.CC_SPACE, job(tokens[0], "done")) == [before[keys.CC_SPACE][0] + 1]


def test_an_append_no_replica_acknowledges_raises_not_replicated(
        cluster: SentinelCluster) -> None:
    """With every replica stopped, an append and a read wait ``SYNC_REPLICA_TIMEOUT`` and
    raise ``NotReplicated`` (a ``ConnectionError``: a job hands itself back, the API answers
    503); with the replicas back, both go through."""
    log = sentinel_log(cluster)
    log.replica_timeout = 0.3
    space = str(uuid.uuid4())
    log.cursor(space)
    replicas = [n for n in cluster.nodes if n.port != cluster.primary_port()]
    for node in replicas:
        assert node.popen is not None
        os.kill(node.popen.pid, signal.SIGSTOP)
    try:
        with pytest.raises(NotReplicated):
            log.append(space, job("t", "queued"))
        with pytest.raises(NotReplicated):
            log.read(space, 0)
        assert issubclass(NotReplicated, redis.ConnectionError)
    finally:
        for node in replicas:
            assert node.popen is not None
            os.kill(node.popen.pid, signal.SIGCONT)
    log.replica_timeout = 5
    assert len(log.append(space, job("t", "done"))) == 1
    assert log.read(space, 0).events
