"""Record-level events (SPEC §7): after each committed batch, one append to the project's
space with a ``records`` UPDATE/DELETE event per changed gid — subtree rows included — and
none at all when record events are switched off.  The events of a committed batch survive
Redis going away (the sync outbox): the retry, or the reaper, appends them."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import replace
from typing import Any

import pytest
import redis
from sqlalchemy import Connection, func, select

from bulkjobs import keys
from bulkjobs.settings import get_settings
from bulkjobs.synclog import NewEvent, SyncLog
from models import SyncOutbox
from models.engine import get_engine
from models.seed import SeededProject
from tests.worker.helpers import (
    cfg,
    children,
    deps,
    do,
    job_row,
    make_link,
    new_job,
    records,
    space_events,
    subtree,
)
from tests.worker.proxy import RedisProxy
from worker import runner
from worker.jobs import CATALOGUE, Context, Failure
from worker.reaper import reap
from worker.retry import RetryLater
from worker.terminal import reject

pytestmark = pytest.mark.services


class CountingLog(SyncLog):
    """A sync log that counts append calls per space."""

    def __init__(self, client: redis.Redis) -> None:
        super().__init__(client, dedupe_ttl=600)
        self.calls: dict[str, int] = {}

    def append(self, space: str, events: Sequence[NewEvent], *,
               once_key: str | None = None) -> list[int]:
        self.calls[space] = self.calls.get(space, 0) + 1
        return super().append(space, events, once_key=once_key)

    def append_records(self, project: str, groups: Iterable[tuple[str, str, Sequence[str]]],
                       *, once_key: str | None = None) -> range:
        self.calls[project] = self.calls.get(project, 0) + 1
        return super().append_records(project, groups, once_key=once_key)

    def append_end(self, space: str, terminal: NewEvent, **kw: Any) -> list[int]:
        """A job's end: its job events, and the record events it held back with them."""
        self.calls[space] = self.calls.get(space, 0) + 1
        if kw.get("records"):
            self.calls[kw["project"]] = self.calls.get(kw["project"], 0) + 1
        return super().append_end(space, terminal, **kw)


@pytest.fixture
def log(redis_client: redis.Redis) -> CountingLog:
    return CountingLog(redis_client)


def actions(log: SyncLog, project: SeededProject) -> list[tuple[str, str]]:
    events = space_events(log, project.gid)
    assert all(e["type"] == project.gid and e["data_type"] == "records" and "data" not in e
               for e in events)
    return [(e["action"], e["data_key"]) for e in events]


def test_delete_and_undelete_announce_every_subtree_row(
    log: CountingLog, project: SeededProject
) -> None:
    """Deleting two heads gives a DELETE per row of both subtrees and of the link into one,
    in one append for the one batch; undeleting them gives an UPDATE per restored row."""
    recs = records(project.gid)
    heads = project.heads[:2]
    link = make_link(project, children(recs, heads[1])[0])
    rows = set(subtree(recs, heads[0]) + subtree(recs, heads[1])) | {link}
    do(log, project, "bulk_delete_records", heads, record_events=True)
    deleted = actions(log, project)
    assert sorted(deleted) == sorted(("DELETE", g) for g in rows)
    assert log.calls[project.gid] == 1
    do(log, project, "bulk_undelete_records", heads, record_events=True)
    restored = actions(log, project)[len(deleted):]
    assert sorted(restored) == sorted(("UPDATE", g) for g in rows)
    assert log.calls[project.gid] == 2


def test_one_append_per_batch(log: CountingLog, project: SeededProject) -> None:
    """With batches of two items, five heads are announced in three appends."""
    recs = records(project.gid)
    heads = [h for h in project.heads if recs[h].status != "deleted"][:5]
    do(log, project, "bulk_delete_records", heads, record_events=True, batch_size=2)
    assert log.calls[project.gid] == 3
    assert len(actions(log, project)) == 500


def test_permanent_delete_announces_removed_rows_and_the_parent(
    log: CountingLog, project: SeededProject
) -> None:
    """Removing a subtree gives a DELETE per removed row and an UPDATE for the parent whose
    childcount changed."""
    recs = records(project.gid)
    head = next(h for h in project.heads if recs[h].status == "deleted")
    do(log, project, "bulk_permanent_delete_records", [head], record_events=True)
    got = actions(log, project)
    assert sorted(a for a in got if a[0] == "DELETE") == sorted(
        ("DELETE", g) for g in subtree(recs, head))
    assert [a for a in got if a[0] == "UPDATE"] == [("UPDATE", project.root)]


def test_switched_off_appends_nothing_to_the_project_space(
    log: CountingLog, project: SeededProject
) -> None:
    """``record_events=False`` (RECORD_EVENTS=false): job events only."""
    do(log, project, "bulk_delete_records", project.heads[:3], record_events=False)
    assert project.gid not in log.calls
    assert log.calls[keys.CC_SPACE] >= 1  # done in one batch: processing to done in one call


class FailingLog(CountingLog):
    """Appends to the project space fail (Redis trouble); job events go through."""

    def append(self, space: str, events: Sequence[NewEvent], *,
               once_key: str | None = None) -> list[int]:
        if space != keys.CC_SPACE:
            raise redis.ConnectionError("project space unavailable")
        return super().append(space, events, once_key=once_key)

    def append_records(self, project: str, groups: Iterable[tuple[str, str, Sequence[str]]],
                       *, once_key: str | None = None) -> range:
        raise redis.ConnectionError("project space unavailable")

    def append_end(self, space: str, terminal: NewEvent, **kw: Any) -> list[int]:
        if kw.get("records"):
            raise redis.ConnectionError("project space unavailable")
        return super().append_end(space, terminal, **kw)


def test_failed_record_event_append_hands_the_job_back_uncounted(
    redis_client: redis.Redis, project: SeededProject
) -> None:
    """Record events are appended off the batch loop, but an append that fails still
    surfaces before the job finishes: the run hands the job back for a retry instead of
    reporting ``done`` with events missing — without counting a failure (Redis away is not
    the job's fault).  (Two batches: a job done in its first appends that batch's events
    with its terminal event, see tests/worker/test_small_job_events.py.)"""
    log = FailingLog(redis_client)
    token = new_job(log, project, "bulk_delete_records", project.heads[:2])
    with pytest.raises(RetryLater) as later:
        runner.run(token, deps=deps(log), cfg=cfg(record_events=True, batch_size=1),
                   requeue=pytest.fail)
    assert later.value.outage
    row = job_row(token)
    assert (row.status, row.failures, row.owner) == ("processing", 0, None)
    assert row.info["remaining"] == 0  # the batch itself committed


# --- Redis away after a batch committed: the outbox keeps its events -----------------------


@pytest.fixture
def proxy() -> Iterator[RedisProxy]:
    p = RedisProxy(get_settings().redis_url)
    yield p
    p.down()


def redis_away_during_batch(monkeypatch: pytest.MonkeyPatch, proxy: RedisProxy, job: str,
                            *, batch: int) -> None:
    """Take Redis away (for the proxy's clients) while the job's ``batch``-th batch runs:
    that batch still commits, and appending its events fails."""
    spec = CATALOGUE[job]
    calls = itertools.count(1)

    def slow_to_fail(conn: Connection, ctx: Context, ids: Sequence[int]) -> list[Failure]:
        failures = spec.batch(conn, ctx, ids)
        if next(calls) == batch:
            proxy.down()
        return failures

    monkeypatch.setitem(CATALOGUE, job, replace(spec, batch=slow_to_fail))


def outbox_rows(token: str) -> int:
    with get_engine().connect() as conn:
        return int(conn.execute(select(func.count()).select_from(SyncOutbox.__table__).where(
            SyncOutbox.__table__.c.job_token == token)).scalar_one())


def test_events_of_a_batch_committed_while_redis_was_away_reach_the_log_on_retry(
    redis_client: redis.Redis, project: SeededProject, proxy: RedisProxy,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Redis goes away while the second of three batches runs: the batch commits, its events
    cannot be appended and the run hands the job back.  A retry while Redis is still away
    does too; once Redis is back the retry appends what the committed batches left in the
    outbox, then runs the last batch: every changed record has its event, the outbox is
    empty, and no failure was counted."""
    redis_away_during_batch(monkeypatch, proxy, "bulk_delete_records", batch=2)
    log = SyncLog(proxy.client(), dedupe_ttl=600)
    reader = SyncLog(redis_client, dedupe_ttl=600)  # the test's own view, straight to Redis
    recs = records(project.gid)
    heads = [h for h in project.heads if recs[h].status != "deleted"][:6]
    expected = {("DELETE", g) for h in heads for g in subtree(recs, h)}
    token = new_job(log, project, "bulk_delete_records", heads)
    config = cfg(record_events=True, batch_size=2)
    with pytest.raises(RetryLater):
        runner.run(token, deps=deps(log), cfg=config, requeue=pytest.fail)
    row = job_row(token)
    assert (row.status, row.info["remaining"], row.failures) == ("processing", 2, 0)
    with pytest.raises(RetryLater):  # Redis still away
        runner.run(token, deps=deps(log), cfg=config, requeue=pytest.fail)
    proxy.up()
    assert runner.run(token, deps=deps(log), cfg=config, requeue=pytest.fail) == "done"
    row = job_row(token)
    assert (row.status, row.failures, row.info["failed"]) == ("done", 0, 0)
    assert set(actions(reader, project)) == expected  # each at least once, nothing else
    assert outbox_rows(token) == 0


def test_events_of_a_job_rejected_while_redis_was_away_are_appended_by_the_reaper(
    redis_client: redis.Redis, project: SeededProject, proxy: RedisProxy,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A job handed back while Redis is away is cancelled (rejected) before Redis is back:
    neither its batch's events nor its terminal event can be appended.  The reaper, once
    Redis is back, appends both: the records the committed batch changed are announced, then
    the job ends."""
    redis_away_during_batch(monkeypatch, proxy, "bulk_delete_records", batch=1)
    log = SyncLog(proxy.client(), dedupe_ttl=600)
    reader = SyncLog(redis_client, dedupe_ttl=600)
    recs = records(project.gid)
    heads = [h for h in project.heads if recs[h].status != "deleted"][:4]
    token = new_job(log, project, "bulk_delete_records", heads)
    with pytest.raises(RetryLater):
        runner.run(token, deps=deps(log), cfg=cfg(record_events=True, batch_size=2),
                   requeue=pytest.fail)
    with pytest.raises(redis.ConnectionError):  # rejected, but the rejection not announced
        reject(token, deps=deps(log), error="cancelled")
    row = job_row(token)
    assert (row.status, row.announced) == ("rejected", False)
    proxy.up()
    monkeypatch.setattr(time, "time", lambda real=time.time: real() + 60)  # past the grace
    reap(log=log, stale_after=30, queued_stale_after=120, requeue=pytest.fail)
    assert set(actions(reader, project)) == {
        ("DELETE", g) for h in heads[:2] for g in subtree(recs, h)}
    statuses = [e["data"]["status"] for e in space_events(reader, keys.CC_SPACE, token)]
    assert statuses[-1] == "rejected" and statuses.count("rejected") == 1
    assert outbox_rows(token) == 0 and job_row(token).announced


def test_switched_off_writes_nothing_to_the_outbox(
    log: CountingLog, project: SeededProject
) -> None:
    """``record_events=False``: a record job owes no events, so no outbox row is written."""
    token, _ = do(log, project, "bulk_delete_records", project.heads[:3], record_events=False)
    with get_engine().connect() as conn:
        assert conn.execute(select(func.count()).select_from(SyncOutbox.__table__)
                            ).scalar_one() == 0
    assert token
