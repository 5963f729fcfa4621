"""Record-level events (SPEC §7): after each committed batch, one append to the project's
space with a ``records`` UPDATE/DELETE event per changed gid — subtree rows included — and
none at all when record events are switched off."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
import redis

from bulkjobs import keys
from bulkjobs.synclog import NewEvent, SyncLog
from models.seed import SeededProject, SeedResult
from tests.worker.helpers import (
    cfg,
    children,
    do,
    job_row,
    make_link,
    new_job,
    records,
    space_events,
    subtree,
)
from worker import runner

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


@pytest.fixture
def log(redis_client: redis.Redis) -> CountingLog:
    return CountingLog(redis_client)


@pytest.fixture
def project(seeded: SeedResult) -> SeededProject:
    return seeded.projects[0]


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
    assert log.calls[keys.CC_SPACE] >= 3


class FailingLog(CountingLog):
    """Appends to the project space fail (Redis trouble); job events go through."""

    def append(self, space: str, events: Sequence[NewEvent], *,
               once_key: str | None = None) -> list[int]:
        if space != keys.CC_SPACE:
            raise redis.ConnectionError("project space unavailable")
        return super().append(space, events, once_key=once_key)


def test_failed_record_event_append_counts_as_the_jobs_failure(
    redis_client: redis.Redis, project: SeededProject
) -> None:
    """Record events are appended off the batch loop, but an append that fails still
    surfaces before the job finishes: the run fails (and will be retried) instead of
    reporting ``done`` with events missing."""
    log = FailingLog(redis_client)
    token = new_job(log, project, "bulk_delete_records", project.heads[:2])
    with pytest.raises(runner.RetryLater):
        runner.run(token, log=log, cfg=cfg(record_events=True), requeue=pytest.fail)
    row = job_row(token)
    assert (row.status, row.failures, row.owner) == ("processing", 1, None)
    assert row.info["remaining"] == 0  # the batch itself committed
