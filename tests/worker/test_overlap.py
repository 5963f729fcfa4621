"""Two jobs on overlapping selections at once (SPEC §6), on REAL worker processes (see
:mod:`tests.worker.deployment`): each item ends in one well-defined state, neither job
crashes, each item of each job is counted once, and each job has exactly one terminal
event.  The jobs race for real, so the tests assert what holds whichever wins each item."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import func, select

from bulkjobs import keys
from models.engine import get_engine
from tests.worker.deployment import Deployment
from tests.worker.helpers import (
    assert_consistent,
    assert_event_stream,
    children,
    deletions_t,
    do,
    entries,
    make_link,
    records,
    records_t,
    seed_deleted_subtrees,
    space_events,
    subtree,
    tombstones_t,
)

pytestmark = pytest.mark.services

DELETE, UNDELETE = "bulk_delete_records", "bulk_undelete_records"
PURGE = "bulk_permanent_delete_records"


def run_at_once(deployment: Deployment, project_gid: str,
                jobs: list[tuple[str, list[str]]]) -> list[Any]:
    """Start two workers, queue the jobs together, wait for them; returns their rows after
    checking what every job must show: ``done`` without an error or a failed run, every
    item counted, and one event stream with exactly one terminal event."""
    for n in range(2):
        deployment.worker(f"overlap-{n}", BATCH_SIZE="5")
    tokens = [deployment.submit(project_gid, job, selection) for job, selection in jobs]
    rows = deployment.wait_finished(tokens)
    for token, (_, selection) in zip(tokens, jobs, strict=True):
        row = rows[token]
        assert row.status == "done" and "error" not in row.info, row.info
        assert row.info["total"] == len(selection) and row.info["remaining"] == 0
        assert row.failures == 0
        assert_event_stream(space_events(deployment.log, keys.CC_SPACE, token),
                            total=len(selection), terminal="done")
    return [rows[t] for t in tokens]


def assert_tree_intact(project_gid: str) -> None:
    """No record lost its parent or a link its target, every ``childcount`` is the number
    of children left, no permanently deleted gid is still a record, and no deletion row
    outlives its record."""
    recs = records(project_gid)
    by_id = {r.id: r for r in recs.values()}
    counts: dict[int, int] = {}
    for gid, r in recs.items():
        if r.parent_id is not None:
            assert r.parent_id in by_id, gid
            counts[r.parent_id] = counts.get(r.parent_id, 0) + 1
        if r.is_link:
            assert r.canonical_id in by_id, gid
    assert {r.id: r.childcount for r in recs.values() if r.childcount or r.id in counts} == counts
    with get_engine().connect() as conn:
        purged = set(conn.execute(select(tombstones_t.c.gid).where(
            tombstones_t.c.project_gid == project_gid)).scalars())
        orphans = conn.execute(select(func.count()).select_from(deletions_t).where(
            ~select(records_t.c.id).where(records_t.c.id == deletions_t.c.record_id).exists())
        ).scalar_one()
    assert not purged & set(recs)
    assert orphans == 0


def test_overlapping_delete_and_undelete_at_once_leave_every_record_well_defined(
    deployment: Deployment,
) -> None:
    """A bulk delete and a bulk undelete over overlapping subtrees run at the same time on
    two workers: both end ``done`` (per-item failures only), each item counted exactly once,
    and every record ends in one well-defined state (deleted rows carry a generation, every
    row keeps a draft or published status of its own, no live record under a deleted
    parent)."""
    project = seed_deleted_subtrees(60, deleted_every=2).projects[0]
    recs = records(project.gid)
    deleted_heads = [h for h in project.heads if recs[h].status == "deleted"]
    live_heads = [h for h in project.heads if recs[h].status != "deleted"]
    kids = [c for h in project.heads for c in children(recs, h)]
    # delete: every second-level record, live or not; undelete: the deleted heads, then the
    # second-level records under live heads (which the delete may have just deleted).
    delete_sel = kids
    undelete_sel = deleted_heads + [c for h in live_heads for c in children(recs, h)]
    tokens = [r.token for r in run_at_once(deployment, project.gid, [
        (DELETE, delete_sel), (UNDELETE, undelete_sel)])]
    for token, action in zip(tokens, ("delete", "undelete"), strict=True):
        row = deployment.row(token)
        assert len(entries(token, action)) == row.info["total"] - row.info["failed"]
    assert_consistent(project.gid)
    assert_tree_intact(project.gid)


def test_delete_and_permanent_delete_at_once(deployment: Deployment) -> None:
    """A bulk delete of live subtrees and a permanent delete of the deleted generations
    nested in them (and of other deleted subtrees) at the same time: both end with no
    failed item; the live subtrees end deleted in their heads' generations, the nested and
    the other deleted subtrees are gone with the links to them, and the tree is intact."""
    project = seed_deleted_subtrees(40, deleted_every=2).projects[0]
    log = deployment.log
    recs = records(project.gid)
    live_heads = [h for h in project.heads if recs[h].status != "deleted"]
    deleted_heads = [h for h in project.heads if recs[h].status == "deleted"]
    nested = [children(recs, h)[1] for h in live_heads]  # deleted on their own first
    into_nested = make_link(project, children(recs, nested[0])[0])
    into_live = make_link(project, children(recs, live_heads[1])[3])
    do(log, project, DELETE, nested)
    recs = records(project.gid)
    delete_sel, purge_sel = live_heads, nested + deleted_heads
    delete, purge = run_at_once(deployment, project.gid, [(DELETE, delete_sel),
                                                         (PURGE, purge_sel)])
    assert delete.info["failed"] == 0 and purge.info["failed"] == 0, (delete.info, purge.info)
    after = records(project.gid)
    gone = {g for h in purge_sel for g in subtree(recs, h)} | {into_nested}
    assert not gone & set(after)
    for head in live_heads:
        rows = [after[g] for g in subtree(recs, head) if g not in gone]
        assert {(r.status, r.deleted_root) for r in rows} == {("deleted", after[head].id)}
    assert (after[into_live].status, after[into_live].deleted_root) == (
        "deleted", after[live_heads[1]].id)
    assert len(entries(delete.token, "delete")) == len(delete_sel)
    assert_consistent(project.gid)
    assert_tree_intact(project.gid)


def test_undelete_and_permanent_delete_of_the_same_records_at_once(
    deployment: Deployment,
) -> None:
    """An undelete and a permanent delete of the same deleted subtrees, taken in opposite
    orders so that each wins some: every subtree ends either wholly live (the permanent
    delete failed it: "not deleted") or gone (the undelete failed it: "permanently
    deleted"), never both or neither, and each job counts every item once."""
    project = seed_deleted_subtrees(40, deleted_every=2).projects[0]
    recs = records(project.gid)
    heads = [h for h in project.heads if recs[h].status == "deleted"][:18]
    undelete, purge = run_at_once(deployment, project.gid, [(UNDELETE, heads),
                                                           (PURGE, heads[::-1])])
    after = records(project.gid)
    live = [h for h in heads if h in after]
    purged = [h for h in heads if h not in after]
    for head in live:
        assert {after[g].status for g in subtree(recs, head)} <= {"draft", "published"}
    for head in purged:
        assert not set(subtree(recs, head)) & set(after)
    assert undelete.info["failed"] == len(purged) and purge.info["failed"] == len(live)
    assert sorted((e["gid"], e["reason"]) for e in undelete.info["errors"]) == sorted(
        (h, "permanently deleted") for h in purged)
    assert sorted((e["gid"], e["reason"]) for e in purge.info["errors"]) == sorted(
        (h, "not deleted") for h in live)
    assert sorted(entries(undelete.token, "undelete")) == sorted(after[h].id for h in live)
    assert_consistent(project.gid)
    assert_tree_intact(project.gid)


def test_two_deletes_of_nested_selections_at_once(deployment: Deployment) -> None:
    """One job deletes live subtrees' heads, the other the records inside them (children
    and grandchildren, nested in one another): every record of those subtrees ends deleted
    in one generation (a head's, or a record the second job deleted before the first
    reached its head); the first job fails nothing; the second fails exactly the items it
    found deleted already, each once."""
    project = seed_deleted_subtrees(30, deleted_every=3).projects[0]
    recs = records(project.gid)
    heads = [h for h in project.heads if recs[h].status != "deleted"]
    inner = [g for h in heads for c in children(recs, h)[:4] for g in [c, *children(recs, c)[:2]]]
    tops, insides = run_at_once(deployment, project.gid, [(DELETE, heads),
                                                         (DELETE, inner[::-1])])
    after = records(project.gid)
    assert tops.info["failed"] == 0
    assert {after[g].status for h in heads for g in subtree(recs, h)} == {"deleted"}
    for head in heads:  # every generation is the head's or one of the inner items'
        allowed = {after[head].id} | {after[g].id for g in inner}
        assert {after[g].deleted_root for g in subtree(recs, head)} <= allowed
    failed = {e["gid"] for e in insides.info["errors"]}
    assert all(e["reason"] == "already deleted" for e in insides.info["errors"])
    assert len(entries(insides.token, "delete")) == len(inner) - insides.info["failed"]
    assert failed <= set(inner)
    assert_consistent(project.gid)
    assert_tree_intact(project.gid)
