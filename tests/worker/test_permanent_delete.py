"""Permanent delete (``worker/jobs/records.py``): ``bulk_permanent_delete_records`` and
``permanent_delete_record``, run in-process through the runner against the real services."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import func, select, text

from bulkjobs.synclog import SyncLog
from models.engine import get_engine
from models.seed import SeededProject, SeedResult
from tests.worker.helpers import (
    assert_consistent,
    children,
    deletions_t,
    do,
    make_link,
    records,
    records_t,
    subtree,
    tombstones_t,
    versions,
    workflow,
)

pytestmark = pytest.mark.services

DELETE, UNDELETE = "bulk_delete_records", "bulk_undelete_records"
PURGE, PURGE_ONE = "bulk_permanent_delete_records", "permanent_delete_record"


def tombstones() -> dict[str, Any]:
    with get_engine().connect() as conn:
        return {t.gid: t for t in conn.execute(select(tombstones_t))}


def search_entries(ids: list[int]) -> int:
    """Search index entries of these record ids (whichever engine the index uses)."""
    with get_engine().connect() as conn:
        if conn.dialect.name == "postgresql":
            sql = "SELECT COUNT(*) FROM record_search WHERE record_id IN ({})"
        else:
            sql = "SELECT COUNT(*) FROM record_fts WHERE (rowid >> 10) IN ({})"
        return int(conn.execute(text(sql.format(",".join(map(str, ids))))).scalar_one())


def deletion_rows(ids: list[int]) -> int:
    """Deletion rows left of these record ids (a removed record must leave none)."""
    with get_engine().connect() as conn:
        return int(conn.execute(select(func.count()).select_from(deletions_t).where(
            deletions_t.c.record_id.in_(ids))).scalar_one())


def test_removes_subtree_links_history_and_leaves_tombstones(
    log: SyncLog, project: SeededProject
) -> None:
    """Permanently deleting a deleted head removes its whole subtree, every link to a removed
    record (live, deleted with it, or deleted on its own), their versions, workflow entries
    and search entries; each removed row leaves a tombstone; the root's childcount drops by
    the head and the links under it."""
    recs = records(project.gid)
    head = project.heads[0]
    grandchild = children(recs, children(recs, head)[2])[1]
    link_deleted_with = make_link(project, grandchild)
    link_separate = make_link(project, children(recs, head)[5])
    do(log, project, DELETE, [link_separate])
    do(log, project, DELETE, [head])
    # a link undeleted on its own after its target was deleted: live, pointing at the tree
    link_live = make_link(project, children(recs, head)[6])
    keep_link = make_link(project, project.heads[1])
    before = records(project.gid)
    tree = subtree(before, head)
    doomed = tree + [link_deleted_with, link_separate, link_live]
    ids = [before[g].id for g in doomed]
    assert search_entries(ids) > 0
    assert workflow([before[head].id])

    token, row = do(log, project, PURGE, [head])

    assert (row.status, row.info) == ("done", {"total": 1, "remaining": 0, "failed": 0,
                                                "errors": []})
    after = records(project.gid)
    assert set(before) - set(after) == set(doomed)
    assert keep_link in after
    assert after[project.root].childcount == before[project.root].childcount - 4
    assert all(not versions(i) for i in ids) and not workflow(ids)
    assert search_entries(ids) == 0
    assert deletion_rows(ids) == 0
    stones = tombstones()
    assert set(stones) == set(doomed)
    assert stones[head].parent_gid == project.root
    assert stones[grandchild].parent_gid == children(before, head)[2]
    assert {stones[g].record_id for g in doomed} == set(ids)
    assert all(s.project_gid == project.gid for s in stones.values())
    assert_consistent(project.gid)


@pytest.mark.parametrize(
    ("pick", "reason"),
    [
        pytest.param("live", "not deleted", id="live"),
        pytest.param("deleted_with_ancestor",
                     "deleted with an ancestor; permanently delete that ancestor",
                     id="deleted-with-ancestor"),
    ],
)
def test_wrong_state_fails_per_item(
    log: SyncLog, project: SeededProject, pick: str, reason: str
) -> None:
    """A live record, or one deleted only as part of an ancestor's deletion, fails per item
    and stays as it was; the other items are removed and the job ends ``done``."""
    recs = records(project.gid)
    deleted_head = next(h for h in project.heads if recs[h].status == "deleted")
    bad = {"live": project.heads[1],
           "deleted_with_ancestor": children(recs, deleted_head)[3]}[pick]
    do(log, project, DELETE, [project.heads[2]])
    _, row = do(log, project, PURGE, [bad, project.heads[2]])
    assert row.status == "done"
    assert row.info == {"total": 2, "remaining": 0, "failed": 1,
                        "errors": [{"gid": bad, "reason": reason}]}
    after = records(project.gid)
    assert after[bad].status == recs[bad].status
    assert project.heads[2] not in after


def test_undelete_and_second_purge_of_purged_gids_fail_per_item(
    log: SyncLog, project: SeededProject
) -> None:
    """A gid that was permanently deleted — the head or any record of its subtree — is not
    skipped as unknown: undelete and a second permanent delete count it as failed with
    "permanently deleted"; unknown gids are still skipped silently."""
    recs = records(project.gid)
    head = project.heads[3]
    inner = children(recs, head)[0]
    do(log, project, DELETE, [head])
    do(log, project, PURGE, [head])
    selection = [head, inner, "no-such-gid"]
    for job in (UNDELETE, PURGE):
        _, row = do(log, project, job, selection)
        assert row.status == "done"
        assert row.info == {"total": 2, "remaining": 0, "failed": 2, "errors": [
            {"gid": head, "reason": "permanently deleted"},
            {"gid": inner, "reason": "permanently deleted"}]}


def test_tombstones_are_per_project(log: SyncLog, seeded: SeedResult) -> None:
    """Another project's purged gid is unknown here, skipped silently (never a leak)."""
    a, b = seeded.projects
    do(log, a, DELETE, [a.heads[0]])
    do(log, a, PURGE, [a.heads[0]])
    _, row = do(log, b, UNDELETE, [a.heads[0]])
    assert row.info == {"total": 0, "remaining": 0, "failed": 0, "errors": []}


@pytest.mark.parametrize("batch_size", [1, 1000])
def test_nested_generations_selected_together(
    log: SyncLog, project: SeededProject, batch_size: int
) -> None:
    """A record deleted on its own, then its ancestor deleted: selecting both removes both,
    each as a success, however the batches fall."""
    recs = records(project.gid)
    head = project.heads[4]
    inner = children(recs, head)[7]
    do(log, project, DELETE, [inner])
    do(log, project, DELETE, [head])
    _, row = do(log, project, PURGE, [head, inner], batch_size=batch_size)
    assert row.info == {"total": 2, "remaining": 0, "failed": 0, "errors": []}
    after = records(project.gid)
    assert not set(subtree(recs, head)) & set(after)
    assert_consistent(project.gid)


def test_children_entry_selects_deleted_children(log: SyncLog, project: SeededProject) -> None:
    """``{"children": root}`` in a permanent delete selects the deleted children only."""
    recs = records(project.gid)
    deleted = [h for h in project.heads if recs[h].status == "deleted"]
    _, row = do(log, project, PURGE, [{"children": project.root}])
    assert row.info["total"] == len(deleted) and row.info["failed"] == 0
    after = records(project.gid)
    assert not set(deleted) & set(after)
    with get_engine().connect() as conn:
        left = conn.execute(select(func.count()).select_from(records_t).join(
            deletions_t, deletions_t.c.record_id == records_t.c.id).where(
            records_t.c.project_gid == project.gid)).scalar_one()
    assert left == 0
    assert deletion_rows([recs[g].id for h in deleted for g in subtree(recs, h)]) == 0


def test_single_record_job_answers_with_the_parent(
    log: SyncLog, project: SeededProject
) -> None:
    """``permanent_delete_record`` stores the result ``{"record", "parent"}`` with status 200."""
    recs = records(project.gid)
    inner = children(recs, project.heads[5])[1]
    do(log, project, DELETE, [inner])
    _, row = do(log, project, PURGE_ONE, [inner])
    assert (row.status, row.result_status) == ("done", 200)
    assert row.result_payload == {"record": inner, "parent": project.heads[5]}
    after = records(project.gid)
    assert inner not in after
    assert after[project.heads[5]].childcount == recs[project.heads[5]].childcount - 1


@pytest.mark.parametrize(
    ("pick", "status", "message"),
    [
        pytest.param("live", 422, "not deleted", id="live"),
        pytest.param("unknown", 422, "Record not found", id="unknown"),
        pytest.param("purged", 422, "permanently deleted", id="purged"),
    ],
)
def test_single_record_job_that_cannot_remove_is_rejected(
    log: SyncLog, project: SeededProject, pick: str, status: int, message: str
) -> None:
    """The single-record job rejects (its result is the answer) with the reason as
    ``info.error`` and an error result; nothing changes."""
    gid = {"live": project.heads[6], "unknown": "no-such-gid", "purged": project.heads[7]}[pick]
    if pick == "purged":
        do(log, project, DELETE, [gid])
        do(log, project, PURGE, [gid])
    before = records(project.gid)
    _, row = do(log, project, PURGE_ONE, [gid])
    assert (row.status, row.info["error"], row.result_status) == ("rejected", message, status)
    assert row.result_payload["error"]["message"] == message
    assert records(project.gid) == before
