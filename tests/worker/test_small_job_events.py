"""A small job's events in one round trip (``worker/runner.py``, ``worker/terminal.py``,
``worker/progress.py``, ``worker/outbox.py``): a job done in its first batch appends its
``processing`` event, that batch's record events and its terminal event — counted in the
metrics — in one script call; a job that goes on publishes its ``processing`` event before
anything else, and a failed append is repaired as before."""

from __future__ import annotations

import itertools
import re
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import Any

import pytest
import redis
from sqlalchemy import Connection, func, select, update

from bulkjobs import metrics
from bulkjobs.settings import get_settings
from bulkjobs.synclog import SyncLog
from models import SyncOutbox
from models.engine import get_engine, get_write_engine
from models.jobs import Job
from models.seed import SeededProject
from tests.worker.helpers import (
    cfg,
    deps,
    job_events,
    job_row,
    new_job,
    records,
    space_events,
    subtree,
)
from tests.worker.proxy import RedisProxy
from worker import announced
from worker.jobs import CATALOGUE, Context, Failure
from worker.progress import JobState, Publisher
from worker.reaper import reap
from worker.runner import run
from worker.terminal import announce

pytestmark = pytest.mark.services
DELETE = "bulk_delete_records"
_COMMAND = re.compile(rb"\*\d+\r\n\$\d+\r\n([A-Za-z]+)\r\n")


class Trips:
    """The round trips one thread makes: what each send carried (command names)."""

    def __init__(self) -> None:
        self.thread = threading.get_ident()
        self.sent: list[list[str]] = []


class CountingConnection(redis.Connection):
    """A connection that records each send of the watched thread (one send, one round
    trip: a pipeline goes in one)."""

    watch: Trips | None = None

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        trips = CountingConnection.watch
        if trips is not None and threading.get_ident() == trips.thread:
            data = command if isinstance(command, bytes) else b"".join(command)
            trips.sent.append([m.decode().upper() for m in _COMMAND.findall(data)])
        super().send_packed_command(command, check_health)


@pytest.fixture
def counted(redis_client: redis.Redis) -> Iterator[SyncLog]:
    """A sync log whose connections count the test thread's round trips."""
    pool = redis.ConnectionPool.from_url(get_settings().redis_url,
                                         connection_class=CountingConnection)
    yield SyncLog(redis.Redis(connection_pool=pool), dedupe_ttl=600)
    CountingConnection.watch = None
    pool.disconnect()


def live_heads(project: SeededProject, n: int) -> list[str]:
    recs = records(project.gid)
    return [h for h in project.heads if recs[h].status != "deleted"][:n]


def outbox_rows(token: str) -> int:
    table = SyncOutbox.__table__
    with get_engine().connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table)
                                .where(table.c.job_token == token)).scalar_one())


def statuses(log: SyncLog, token: str) -> list[str]:
    return [e["data"]["status"] for e in job_events(log, token)]


def test_a_job_done_in_its_first_batch_makes_one_round_trip(
        counted: SyncLog, project: SeededProject) -> None:
    """A one-gid delete with record events: its processing event, its record events and its
    terminal event with its metrics go to Redis in one script call — one round trip."""
    first, second = (new_job(counted, project, DELETE, [h]) for h in live_heads(project, 2))
    config = cfg(record_events=True)
    # the first loads the scripts into Redis
    assert run(first, deps=deps(counted), cfg=config, requeue=pytest.fail) == "done"
    before = records(project.gid)
    seen = len(space_events(counted, project.gid))
    trips = CountingConnection.watch = Trips()
    assert run(second, deps=deps(counted), cfg=config, requeue=pytest.fail) == "done"
    CountingConnection.watch = None
    assert trips.sent == [["EVALSHA"]], trips.sent
    assert statuses(counted, second) == ["queued", "processing", "done"]
    newly = {g for g, r in records(project.gid).items()
             if r.status == "deleted" and before[g].status != "deleted"}
    events = [(e["action"], e["data_key"]) for e in space_events(counted, project.gid)[seen:]]
    assert newly and sorted(events) == sorted(("DELETE", g) for g in newly)
    assert metrics.read(counted.r).finished == {(DELETE, "done"): 2}


def test_the_terminal_is_counted_once_however_often_it_is_announced(
        log: SyncLog, project: SeededProject) -> None:
    """A finished job announced again (a run, ``announce``, the reaper) appends nothing
    and counts nothing again: one terminal event, one finished job, its items once."""
    head = live_heads(project, 1)[0]
    token = new_job(log, project, DELETE, [head])
    assert run(token, deps=deps(log), cfg=cfg(record_events=True), requeue=pytest.fail) == "done"
    for _ in range(2):
        with get_write_engine().begin() as conn:
            conn.execute(update(Job.__table__).where(Job.__table__.c.token == token)
                         .values(announced=False))
        assert announce(deps(log), token) is True
    assert statuses(log, token).count("done") == 1
    totals = metrics.read(log.r)
    assert totals.finished == {(DELETE, "done"): 1}
    assert totals.items == {DELETE: job_row(token).info["total"]}
    assert sum(totals.duration_buckets[DELETE]) == 1


def test_a_job_that_goes_on_publishes_its_processing_event_first(
        log: SyncLog, project: SeededProject) -> None:
    """Two batches: the processing event is appended once the first batch committed,
    before that batch's progress and record events; then the job ends as before."""
    heads = live_heads(project, 2)
    token = new_job(log, project, DELETE, heads)
    assert run(token, deps=deps(log), cfg=cfg(record_events=True, batch_size=1),
               requeue=pytest.fail) == "done"
    events = job_events(log, token)
    assert [(e["data"]["status"], e["data"]["info"].get("remaining")) for e in events] == [
        ("queued", None), ("processing", 2), ("processing", 1), ("processing", 0), ("done", 0)]
    recs = records(project.gid)
    expected = {g for h in heads for g in subtree(recs, h)}
    deleted = [e["data_key"] for e in space_events(log, project.gid) if e["action"] == "DELETE"]
    assert sorted(deleted) == sorted(expected)


def test_a_held_processing_event_goes_before_the_heartbeats(log: SyncLog) -> None:
    """The heartbeat publishing while the first batch runs appends the held processing
    event first; closed, the publisher hands over only what is still held."""
    started = JobState("t-held", "p", DELETE, "processing", {"total": 3, "remaining": 3},
                       1.0, 1.0)
    publisher = Publisher(log, interval=0.0)
    publisher.hold(started)
    assert publisher.holding and job_events(log, "t-held") == []
    assert publisher.publish(replace(started, info={"total": 3, "remaining": 2}), force=True)
    assert [e["data"]["info"]["remaining"] for e in job_events(log, "t-held")] == [3, 2]
    assert publisher.close() is None
    again = Publisher(log, interval=0.0)
    again.hold(started)
    assert again.close() == started
    assert not again.publish(replace(started, info={"total": 3, "remaining": 1}), force=True)


# --- Redis away when the job ends --------------------------------------------------------


@pytest.fixture
def proxy() -> Iterator[RedisProxy]:
    p = RedisProxy(get_settings().redis_url)
    yield p
    p.down()


def redis_away_during_first_batch(monkeypatch: pytest.MonkeyPatch, proxy: RedisProxy) -> None:
    spec = CATALOGUE[DELETE]
    calls = itertools.count(1)

    def then_away(conn: Connection, ctx: Context, ids: Sequence[int]) -> list[Failure]:
        failures = spec.batch(conn, ctx, ids)
        if next(calls) == 1:
            proxy.down()
        return failures

    monkeypatch.setitem(CATALOGUE, DELETE, replace(spec, batch=then_away))


def test_a_failed_end_is_repaired_with_every_record_event_before_the_terminal(
        redis_client: redis.Redis, project: SeededProject, proxy: RedisProxy,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Redis goes away while a small job's one batch runs: the job ends ``done``
    unannounced, its outbox rows kept.  The reaper, once Redis is back, appends the
    record events, then the terminal event, each once, and counts the job once; the
    held processing event is missing from the log."""
    redis_away_during_first_batch(monkeypatch, proxy)
    log = SyncLog(proxy.client(), dedupe_ttl=600)
    reader = SyncLog(redis_client, dedupe_ttl=600)
    head = live_heads(project, 1)[0]
    expected = set(subtree(records(project.gid), head))
    token = new_job(log, project, DELETE, [head])
    with pytest.raises(redis.ConnectionError):
        run(token, deps=deps(log), cfg=cfg(record_events=True), requeue=pytest.fail)
    row = job_row(token)
    assert (row.status, row.announced, row.owner) == ("done", False, None)
    assert outbox_rows(token) > 0
    proxy.up()
    monkeypatch.setattr(time, "time", lambda real=time.time: real() + 60)  # past the grace
    reap(log=reader, stale_after=30, queued_stale_after=120, requeue=pytest.fail)
    deleted = [e["data_key"] for e in space_events(reader, project.gid)
               if e["action"] == "DELETE"]
    assert sorted(deleted) == sorted(expected)
    assert statuses(reader, token) == ["queued", "done"]
    assert outbox_rows(token) == 0 and job_row(token).announced
    assert metrics.read(redis_client).finished == {(DELETE, "done"): 1}


def test_rows_appended_with_the_terminal_go_with_the_next_terminal_transaction(
        log: SyncLog, project: SeededProject, monkeypatch: pytest.MonkeyPatch) -> None:
    """The outbox rows of a job done in its first batch outlive its terminal transaction
    and go with the next job's; the reaper, draining them meanwhile, appends nothing."""
    monkeypatch.setattr(announced, "DUE_AFTER", 3600.0)  # no marks thread meanwhile
    first, second = (new_job(log, project, DELETE, [h]) for h in live_heads(project, 2))
    config = cfg(record_events=True)
    assert run(first, deps=deps(log), cfg=config, requeue=pytest.fail) == "done"
    assert outbox_rows(first) > 0
    events = len(space_events(log, project.gid))
    assert run(second, deps=deps(log), cfg=config, requeue=pytest.fail) == "done"
    assert outbox_rows(first) == 0 and outbox_rows(second) > 0
    with get_write_engine().begin() as conn:  # as the marks thread would
        conn.execute(update(Job.__table__).where(Job.__table__.c.token == second)
                     .values(announced=True))
    after_second = len(space_events(log, project.gid))
    assert after_second > events
    reap(log=log, stale_after=30, queued_stale_after=120, requeue=pytest.fail)
    assert outbox_rows(second) == 0 and len(space_events(log, project.gid)) == after_second


def test_rows_appended_with_the_terminal_go_with_the_announced_mark(
        log: SyncLog, project: SeededProject, monkeypatch: pytest.MonkeyPatch) -> None:
    """When no job follows, the marks thread's transaction, which sets ``announced``, deletes
    the rows too: none is left for the reaper."""
    monkeypatch.setattr(announced, "DUE_AFTER", 0.05)
    token = new_job(log, project, DELETE, live_heads(project, 1))
    assert run(token, deps=deps(log), cfg=cfg(record_events=True),
               requeue=pytest.fail) == "done"
    deadline = time.monotonic() + 30  # liveness only: the thread writes within DUE_AFTER
    while not job_row(token).announced:
        assert time.monotonic() < deadline, "the announced mark was never written"
        time.sleep(0.02)
    assert outbox_rows(token) == 0
