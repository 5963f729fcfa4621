"""Record jobs (``worker/jobs/records.py``) run through the runner (``worker/runner.py``)
in-process: jobs are created with ``submit`` and run by calling ``run`` directly (no Celery),
against the real database and Redis."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import pytest
import redis
from sqlalchemy import insert, select, text, update

from bulkjobs import keys
from bulkjobs.errors import NotFound
from bulkjobs.synclog import NewEvent, SyncLog
from models import Job, Record, WorkflowEntry
from models.engine import get_engine, get_write_engine
from models.seed import SeededProject, SeedResult
from tests.worker.helpers import children, deps, job_events, records, subtree
from worker.deps import RunConfig
from worker.lease import claim
from worker.reaper import reap
from worker.runner import run
from worker.submit import cancel, submit
from worker.terminal import announce

pytestmark = pytest.mark.services

records_t = Record.__table__
jobs_t = Job.__table__
workflow_t = WorkflowEntry.__table__

DELETE, UNDELETE = "bulk_delete_records", "bulk_undelete_records"


# --- helpers -----------------------------------------------------------------------------------


class HookedLog(SyncLog):
    """A sync log that calls ``hook(event)`` after each append of a job event: the runner
    publishes right after each committed batch, so this is "between batches"."""

    def __init__(self, client: redis.Redis) -> None:
        super().__init__(client, dedupe_ttl=600)
        self.hook: Callable[[dict[str, Any]], None] | None = None
        self.fail_terminal = False

    def append(
        self, space: str, events: Sequence[NewEvent], *, once_key: str | None = None
    ) -> list[int]:
        if self.fail_terminal and any(e.status in ("done", "rejected") for e in events):
            self.fail_terminal = False
            raise redis.ConnectionError("simulated crash before the terminal event")
        out = super().append(space, events, once_key=once_key)
        if self.hook is not None:
            for e in events:
                self.hook(e.body)
        return out

    def append_end(self, space: str, terminal: NewEvent, **kw: Any) -> list[int]:
        if self.fail_terminal:
            self.fail_terminal = False
            raise redis.ConnectionError("simulated crash before the terminal event")
        out = super().append_end(space, terminal, **kw)
        if self.hook is not None:
            for e in [*kw.get("held", ()), terminal]:
                self.hook(e.body)
        return out


@pytest.fixture
def log(redis_client: redis.Redis) -> HookedLog:
    return HookedLog(redis_client)


def make_link(project: SeededProject, target: str) -> str:
    """A link under the root pointing at ``target``."""
    recs = records(project.gid)
    gid = str(uuid.uuid4())
    with get_write_engine().begin() as conn:
        lid = conn.execute(insert(records_t).values(
            gid=gid, project_gid=project.gid, parent_id=recs[project.root].id,
            canonical_id=recs[target].id, is_link=True, treelevel=1, mpath="", childcount=0,
            title={"en": "link"}, fields={}, status="published", channels=["__all__"],
            orderings={}, created_on=time.time(), updated_on=time.time(),
        ).returning(records_t.c.id)).scalar_one()
        conn.execute(update(records_t).where(records_t.c.id == lid)
                     .values(mpath=f"/{recs[project.root].id}/{lid}/"))
    return gid


def new_job(log: SyncLog, project: SeededProject, job: str, selection: list[Any]) -> str:
    return submit(project_gid=project.gid, job=job, params={"selection": selection},
                  actor={"type": "user", "id": "tester"}, log=log, enqueue=lambda t: None)


def job_row(token: str) -> Any:
    with get_engine().connect() as conn:
        return conn.execute(select(jobs_t).where(jobs_t.c.token == token)).one()


def cfg(**kw: Any) -> RunConfig:
    base = dict(batch_size=1000, progress_interval=0.0, heartbeat_interval=2.0,
                stale_after=30.0, slice_seconds=60.0)
    return RunConfig(**{**base, **kw})


def run_to_end(token: str, log: SyncLog, config: RunConfig, limit: int = 200) -> list[str]:
    """Run a job, and again each time it re-queues itself, until it stops re-queueing."""
    queued = [token]
    outcomes = []
    while queued and len(outcomes) < limit:
        queued.pop()
        outcomes.append(run(token, deps=deps(log), cfg=config, requeue=queued.append))
    return outcomes


def do(log: SyncLog, project: SeededProject, job: str, selection: list[Any],
       **kw: Any) -> tuple[str, Any]:
    token = new_job(log, project, job, selection)
    outcomes = run_to_end(token, log, cfg(**kw))
    assert outcomes[-1] in ("done", "rejected")
    return token, job_row(token)


def workflow(ids: list[int]) -> list[Any]:
    with get_engine().connect() as conn:
        return list(conn.execute(select(workflow_t).where(workflow_t.c.record_id.in_(ids))
                                 .order_by(workflow_t.c.id)))


# --- delete ------------------------------------------------------------------------------------


def test_delete_head_deletes_subtree_and_links_into_it(
    log: HookedLog, project: SeededProject
) -> None:
    """Deleting a subtree head deletes all of it (stamped with the head's generation) and the
    links pointing into it, keeps everything else, and writes one workflow entry."""
    head = project.heads[0]
    recs = records(project.gid)
    link_in = make_link(project, children(recs, children(recs, head)[3])[2])
    link_to_head = make_link(project, head)
    link_out = make_link(project, project.heads[1])
    before = records(project.gid)
    tree = subtree(before, head)

    token, row = do(log, project, DELETE, [head])

    assert (row.status, row.info) == ("done", {"total": 1, "remaining": 0, "failed": 0,
                                                "errors": []})
    after = records(project.gid)
    hid = before[head].id
    assert len(tree) == 100
    for g in tree + [link_in, link_to_head]:
        assert (after[g].status, after[g].deleted_root) == ("deleted", hid), g
    for g in tree:  # the row keeps the status an undelete returns it to
        assert after[g].own_status == before[g].own_status
    assert after[link_out].status == "published" and after[link_out].deleted_root is None
    changed = {g for g in after if after[g].status != before[g].status}
    assert changed == set(tree) | {link_in, link_to_head}
    [entry] = workflow([after[g].id for g in after])
    assert (entry.record_id, entry.action, entry.review_state) == (hid, "delete", "deleted")
    assert entry.actor == {"type": "user", "id": "tester"} and token in entry.comment


@pytest.mark.parametrize(
    ("pick", "reason"),
    [
        pytest.param("root", "the root record cannot be deleted", id="root"),
        pytest.param("deleted_head", "already deleted", id="deleted-head"),
        pytest.param("deleted_grandchild", "already deleted", id="inside-deleted-subtree"),
    ],
)
def test_delete_wrong_state_fails_per_item(
    log: HookedLog, project: SeededProject, pick: str, reason: str
) -> None:
    """A selected record that cannot be deleted counts as failed with a reason; the other
    items are processed and the job still ends ``done``."""
    before = records(project.gid)
    deleted_head = next(h for h in project.heads if before[h].status == "deleted")
    bad = {
        "root": project.root,
        "deleted_head": deleted_head,
        "deleted_grandchild": children(before, children(before, deleted_head)[0])[0],
    }[pick]
    good = project.heads[2]
    _, row = do(log, project, DELETE, [bad, good])
    assert row.status == "done"
    assert row.info == {"total": 2, "remaining": 0, "failed": 1,
                        "errors": [{"gid": bad, "reason": reason}]}
    after = records(project.gid)
    assert after[good].status == "deleted"
    assert after[bad].status == before[bad].status
    assert after[bad].deleted_root == before[bad].deleted_root
    assert [w.record_id for w in workflow([after[bad].id, after[good].id])] == [after[good].id]


def test_errors_keep_the_first_twenty_failures_and_failed_counts_them_all(
    log: HookedLog, project: SeededProject
) -> None:
    """30 of 36 items fail, spread over batches of 7: ``failed`` counts all 30, ``errors``
    holds the first 20 of them (``{gid, reason}``, in item order) and never more, in the
    job row and in every event; the other items are processed."""
    recs = records(project.gid)
    deleted_heads = [h for h in project.heads if recs[h].status == "deleted"]
    bad = [g for g, r in recs.items() if r.status == "deleted" and r.treelevel == 3
           and any(recs[h].mpath in r.mpath for h in deleted_heads)][:30]
    good = [g for g, r in recs.items() if r.status != "deleted" and r.treelevel == 3][:6]
    assert len(bad) == 30 and len(good) == 6
    selection = sorted(bad + good, key=lambda g: recs[g].id)  # batch order = id order
    token, row = do(log, project, DELETE, selection, batch_size=7)
    first = [g for g in selection if g in set(bad)][:20]
    assert row.status == "done"
    assert row.info == {"total": 36, "remaining": 0, "failed": 30,
                        "errors": [{"gid": g, "reason": "already deleted"} for g in first]}
    events = job_events(log, token)
    assert events[-1]["data"]["info"] == row.info
    assert all(len(e["data"]["info"].get("errors", [])) <= 20 for e in events)
    after = records(project.gid)
    assert all(after[g].status == "deleted" for g in good)


@pytest.mark.parametrize("batch_size", [1000, 1], ids=["one-batch", "batch-each"])
@pytest.mark.parametrize("inner_first", [True, False], ids=["inner-first", "outer-first"])
def test_delete_nested_selection_is_one_generation(
    log: HookedLog, project: SeededProject, batch_size: int, inner_first: bool,
) -> None:
    """Selecting a record and something inside its subtree deletes the subtree as one
    generation of the outer record, in whatever order and however the items fall into
    batches, so undeleting the outer record restores all of it."""
    recs = records(project.gid)
    head = project.heads[3]
    inner = children(recs, head)[1]
    selection = [inner, head] if inner_first else [head, inner]
    token, row = do(log, project, DELETE, selection, batch_size=batch_size)
    assert row.info["failed"] == 0 and row.info["errors"] == []
    after = records(project.gid)
    assert {after[g].deleted_root for g in subtree(recs, head)} == {recs[head].id}
    with get_engine().connect() as conn:
        assert conn.execute(text(
            "SELECT COUNT(*) FROM workflow_entry WHERE action = 'delete' AND comment = :c"),
            {"c": f"bulk job {token}"}).scalar_one() == 2
    do(log, project, UNDELETE, [head])
    assert {records(project.gid)[g].status for g in subtree(recs, head)} <= {"draft", "published"}


# --- undelete ----------------------------------------------------------------------------------


def test_undelete_restores_exactly_its_generation(
    log: HookedLog, project: SeededProject
) -> None:
    """Undeleting a head restores exactly the rows of that delete generation, with their
    previous status; a record deleted on its own earlier (and links into it) stay deleted."""
    recs = records(project.gid)
    head = project.heads[4]
    early = children(recs, head)[2]
    link_into_early = make_link(project, children(recs, early)[0])
    link_into_rest = make_link(project, children(recs, head)[5])
    before = records(project.gid)
    early_tree = subtree(before, early)
    do(log, project, DELETE, [early])
    do(log, project, DELETE, [head])
    mid = records(project.gid)
    assert {mid[g].deleted_root for g in early_tree + [link_into_early]} == {before[early].id}
    assert mid[link_into_rest].deleted_root == before[head].id

    token, row = do(log, project, UNDELETE, [head])
    assert row.status == "done" and row.info["failed"] == 0
    after = records(project.gid)
    restored = [g for g in subtree(before, head) if g not in early_tree] + [link_into_rest]
    for g in restored:
        assert (after[g].status, after[g].deleted_root) == (before[g].status, None), g
    for g in early_tree + [link_into_early]:
        assert (after[g].status, after[g].deleted_root) == ("deleted", before[early].id), g
    untouched = set(before) - set(restored) - set(early_tree) - {link_into_early}
    assert all(after[g].status == before[g].status for g in untouched)
    entries = [w for w in workflow([after[head].id]) if w.action == "undelete"]
    assert len(entries) == 1 and token in entries[0].comment
    assert entries[0].review_state == before[head].status


@pytest.mark.parametrize(
    ("pick", "reason"),
    [
        pytest.param("own_generation_under_deleted_parent", "the parent is deleted",
                     id="parent-deleted"),
        pytest.param("deleted_with_ancestor", "deleted with an ancestor; undelete that ancestor",
                     id="deleted-with-ancestor"),
        pytest.param("live", "not deleted", id="live"),
    ],
)
def test_undelete_wrong_state_fails_per_item(
    log: HookedLog, project: SeededProject, pick: str, reason: str
) -> None:
    """Undelete fails per item (with a reason) for a record under a deleted parent, one
    deleted with an ancestor, or a live one; the job ends ``done`` and the record is as it was."""
    recs = records(project.gid)
    head = project.heads[5]
    early = children(recs, head)[0]
    do(log, project, DELETE, [early])
    do(log, project, DELETE, [head])
    deleted_head = next(h for h in project.heads if recs[h].status == "deleted")
    bad = {
        "own_generation_under_deleted_parent": early,
        "deleted_with_ancestor": children(recs, deleted_head)[4],
        "live": project.heads[6],
    }[pick]
    before = records(project.gid)
    _, row = do(log, project, UNDELETE, [bad])
    assert row.status == "done"
    assert row.info == {"total": 1, "remaining": 0, "failed": 1,
                        "errors": [{"gid": bad, "reason": reason}]}
    after = records(project.gid)
    assert {g: (r.status, r.deleted_root) for g, r in after.items()} == {
        g: (r.status, r.deleted_root) for g, r in before.items()}


@pytest.mark.parametrize("batch_size", [1000, 1])
@pytest.mark.parametrize("child_first", [True, False], ids=["child-first", "parent-first"])
def test_undelete_parent_and_child_together_in_any_order(
    log: HookedLog, project: SeededProject, child_first: bool, batch_size: int
) -> None:
    """Undeleting a parent and a separately deleted child in one selection restores both,
    whatever their order in the selection and however the batches fall."""
    recs = records(project.gid)
    head = project.heads[7]
    child = children(recs, head)[4]
    do(log, project, DELETE, [child])
    do(log, project, DELETE, [head])
    selection = [child, head] if child_first else [head, child]
    _, row = do(log, project, UNDELETE, selection, batch_size=batch_size)
    assert row.status == "done"
    assert row.info == {"total": 2, "remaining": 0, "failed": 0, "errors": []}
    after = records(project.gid)
    assert {after[g].status for g in subtree(recs, head)} <= {"draft", "published"}
    assert all(after[g].status == recs[g].status for g in subtree(recs, head))


@pytest.mark.parametrize("batch_size", [1000, 1])
@pytest.mark.parametrize("child_first", [True, False], ids=["child-first", "parent-first"])
def test_undelete_of_records_deleted_with_a_selected_ancestor_counts_them_done(
    log: HookedLog, project: SeededProject, child_first: bool, batch_size: int
) -> None:
    """Records deleted with their head (one generation) and selected together with it come
    back with it and count as done, each with an undelete entry of this job, whatever their
    order in the selection and however the batches fall."""
    recs = records(project.gid)
    head = project.heads[7]
    child = children(recs, head)[4]
    below = [g for g in subtree(recs, child) if g != child][-1]
    do(log, project, DELETE, [head])
    selection = [below, child, head] if child_first else [head, child, below]
    token, row = do(log, project, UNDELETE, selection, batch_size=batch_size)
    assert row.status == "done"
    assert row.info == {"total": 3, "remaining": 0, "failed": 0, "errors": []}
    after = records(project.gid)
    assert all(after[g].status == recs[g].status for g in subtree(recs, head))
    for gid in (head, child, below):
        entries = [w for w in workflow([after[gid].id]) if w.action == "undelete"]
        assert [(e.job_token, e.review_state) for e in entries] == [(token, recs[gid].status)]


# --- events and lifecycle ----------------------------------------------------------------------


def test_event_sequence_of_a_job(log: HookedLog, project: SeededProject) -> None:
    """A job's ``cc`` events: INSERT queued, UPDATE processing with total == remaining, progress
    with ``remaining`` never rising, one UPDATE done with remaining 0, cursors increasing."""
    recs = records(project.gid)
    selection = [{"children": project.root}]  # the nine live heads
    n = len([h for h in project.heads if recs[h].status != "deleted"])
    token = new_job(log, project, DELETE, selection)
    assert run(token, deps=deps(log), cfg=cfg(batch_size=2), requeue=lambda t: None) == "done"
    events = job_events(log, token)
    cursors = [e["cursor"] for e in events]
    assert cursors == sorted(set(cursors))
    assert all(list(e) == ["type", "cursor", "action", "data_type", "data_key", "data"]
               for e in events)
    assert all((e["type"], e["data_type"], e["data_key"]) == ("cc", "jobs", token)
               for e in events)
    assert all(e["data"]["project_gid"] == project.gid and e["data"]["job"] == DELETE
               for e in events)
    first, second, *progress, last = events
    assert (first["action"], first["data"]["status"], first["data"]["info"]) == (
        "INSERT", "queued", {})
    assert (second["action"], second["data"]["status"]) == ("UPDATE", "processing")
    assert second["data"]["info"]["total"] == second["data"]["info"]["remaining"] == n == 9
    assert len(progress) == 5  # one per committed batch of two (progress_interval 0)
    assert all(e["action"] == "UPDATE" and e["data"]["status"] == "processing"
               for e in progress)
    assert (last["action"], last["data"]["status"]) == ("UPDATE", "done")
    assert last["data"]["info"] == {"total": n, "remaining": 0, "failed": 0, "errors": []}
    remaining = [e["data"]["info"]["remaining"] for e in events[1:]]
    assert remaining == sorted(remaining, reverse=True)
    assert all(e["data"]["info"]["total"] == n for e in events[1:])
    assert [e["data"]["created_on"] for e in events] == [first["data"]["created_on"]] * len(events)


def test_rerun_of_finished_job_is_a_no_op(log: HookedLog, project: SeededProject) -> None:
    """Running a finished job again changes nothing and appends no second terminal event."""
    token, row = do(log, project, DELETE, [project.heads[0]])
    events = job_events(log, token)
    cursor = log.cursor(keys.CC_SPACE)
    before = records(project.gid)
    for _ in range(2):
        assert run(token, deps=deps(log), cfg=cfg(), requeue=lambda t: pytest.fail("requeued")) == (
            "skipped")
    assert job_events(log, token) == events
    assert log.cursor(keys.CC_SPACE) == cursor
    assert [e["data"]["status"] for e in events].count("done") == 1
    again = job_row(token)
    assert (again.status, again.info, again.attempts, again.owner) == (
        row.status, row.info, row.attempts, None)
    assert records(project.gid) == before


@pytest.mark.parametrize("after_batches", [0, 1, 3], ids=lambda n: f"after-{n}-batches")
def test_run_that_lost_its_lease_stops_without_committing(
    log: HookedLog, project: SeededProject, after_batches: int
) -> None:
    """When another worker takes the lease between batches, the run stops ("lost") and the
    batch it was working on is not committed; nor is any terminal state."""
    recs = records(project.gid)
    heads = [h for h in project.heads if recs[h].status != "deleted"][:6]
    token = new_job(log, project, DELETE, heads)
    seen = {"batches": -1}

    def take_over(body: dict[str, Any]) -> None:
        # the processing event (held back while the first batch runs: the claim stands for
        # it before any batch), then one event per committed batch (batch_size 1)
        seen["batches"] += 1
        if seen["batches"] == after_batches:
            with get_write_engine().begin() as conn:
                assert claim(conn, token, "other-worker", stale_after=30) is False  # live lease
                assert claim(conn, token, "other-worker", stale_after=-1) is True  # "stale"
            log.hook = None

    log.hook = take_over
    outcome = run(token, deps=deps(log), cfg=cfg(batch_size=1), requeue=lambda t: pytest.fail("!"),
                  claimed=(lambda: take_over({})) if after_batches == 0 else None)
    assert outcome == "lost"
    row = job_row(token)
    assert (row.status, row.owner) == ("processing", "other-worker")
    assert row.info["remaining"] == 6 - after_batches
    after = records(project.gid)
    assert [after[h].status == "deleted" for h in heads] == [
        i < after_batches for i in range(6)]
    assert [e["data"]["status"] for e in job_events(log, token)][-1] == "processing"
    # the new owner finishes the job: every item exactly once
    assert run(token, deps=deps(log), cfg=cfg(), requeue=lambda t: None,
               takeover="other-worker") == "done"
    done = job_row(token)
    assert done.info == {"total": 6, "remaining": 0, "failed": 0, "errors": []}
    assert all(records(project.gid)[h].status == "deleted" for h in heads)


def test_run_skips_a_job_leased_by_a_live_worker(log: HookedLog, project: SeededProject) -> None:
    """A job another worker holds with a fresh heartbeat is skipped, untouched."""
    token = new_job(log, project, DELETE, [project.heads[0]])
    with get_write_engine().begin() as conn:
        assert claim(conn, token, "worker-a", stale_after=30) is True
    assert run(token, deps=deps(log), cfg=cfg(), requeue=lambda t: None) == "skipped"
    row = job_row(token)
    assert (row.status, row.owner, row.resolved) == ("queued", "worker-a", False)
    assert records(project.gid)[project.heads[0]].status != "deleted"


def test_slices_requeue_and_every_item_is_processed_once(
    log: HookedLog, project: SeededProject
) -> None:
    """With ``slice_seconds=0`` each run commits one batch, hands the job back and re-queues
    it; the runs together process every item exactly once.  The run whose batch takes the
    last items ends the job (no run is re-queued to find nothing left)."""
    recs = records(project.gid)
    parent = children(recs, project.heads[1])[0]
    kids = children(recs, parent)
    token = new_job(log, project, DELETE, [{"children": parent}])
    queued: list[str] = []
    assert run(token, deps=deps(log), cfg=cfg(batch_size=3, slice_seconds=0),
               requeue=queued.append) == "sliced"
    assert queued == [token]
    row = job_row(token)
    assert (row.status, row.owner, row.info["remaining"]) == ("processing", None, 7)
    outcomes = run_to_end(token, log, cfg(batch_size=3, slice_seconds=0))
    assert outcomes == ["sliced"] * 2 + ["done"]
    row = job_row(token)
    assert row.info == {"total": 10, "remaining": 0, "failed": 0, "errors": []}
    after = records(project.gid)
    assert all(after[k].status == "deleted" for k in kids)
    assert sorted(w.record_id for w in workflow([after[k].id for k in kids])) == sorted(
        after[k].id for k in kids)
    statuses = [e["data"]["status"] for e in job_events(log, token)]
    assert statuses.count("processing") >= 4 and statuses.count("done") == 1
    assert statuses[:2] == ["queued", "processing"]


# --- cancel, reaper, announce -----------------------------------------------------------------


def test_cancel_of_queued_job_rejects_it(log: HookedLog, project: SeededProject) -> None:
    """Cancelling a queued job rejects it at once with ``info.error == "cancelled"``; a run
    that picks it up later does nothing."""
    token = new_job(log, project, DELETE, [project.heads[0]])
    result = cancel(project_gid=project.gid, token=token, log=log)
    assert result["status"] == "rejected" and result["info"]["error"] == "cancelled"
    assert run(token, deps=deps(log), cfg=cfg(), requeue=lambda t: None) == "skipped"
    assert records(project.gid)[project.heads[0]].status != "deleted"
    events = job_events(log, token)
    assert [(e["action"], e["data"]["status"]) for e in events] == [
        ("INSERT", "queued"), ("UPDATE", "rejected")]
    assert events[-1]["data"]["info"]["error"] == "cancelled"


def test_cancel_of_running_job_stops_after_the_current_batch(
    log: HookedLog, project: SeededProject
) -> None:
    """Cancelling a processing job stops it after the batch in hand; it ends rejected."""
    recs = records(project.gid)
    heads = [h for h in project.heads if recs[h].status != "deleted"][:4]
    token = new_job(log, project, DELETE, heads)

    def cancel_after_first_batch(body: dict[str, Any]) -> None:
        if body["data"]["info"].get("remaining") == 3:
            log.hook = None
            row = cancel(project_gid=project.gid, token=token, log=log)
            assert row["status"] == "processing" and row["cancel_requested"]

    log.hook = cancel_after_first_batch
    assert run(token, deps=deps(log), cfg=cfg(batch_size=1), requeue=lambda t: None) == "rejected"
    row = job_row(token)
    assert (row.status, row.info["error"], row.info["remaining"]) == ("rejected", "cancelled", 3)
    after = records(project.gid)
    assert [after[h].status == "deleted" for h in heads] == [True, False, False, False]
    assert [e["data"]["status"] for e in job_events(log, token)].count("rejected") == 1


def test_cancel_of_another_projects_job_is_not_found(
    log: HookedLog, seeded: SeedResult
) -> None:
    """A job is cancelled only through its own project."""
    a, b = seeded.projects
    token = new_job(log, a, DELETE, [a.heads[0]])
    with pytest.raises(NotFound):
        cancel(project_gid=b.gid, token=token, log=log)
    assert job_row(token).status == "queued"


def test_reaper_requeues_a_job_whose_worker_died(log: HookedLog, project: SeededProject) -> None:
    """A processing job whose heartbeat is older than ``stale_after`` is handed back and
    re-queued once; a second run completes it, every item once."""
    recs = records(project.gid)
    heads = [h for h in project.heads if recs[h].status != "deleted"][:5]
    token = new_job(log, project, DELETE, heads)
    assert run(token, deps=deps(log), cfg=cfg(batch_size=2, slice_seconds=0),
               requeue=lambda t: None) == "sliced"
    # a worker took it and died (SIGKILL): it holds the lease but stopped heart-beating
    with get_write_engine().begin() as conn:
        assert claim(conn, token, "dead-worker", stale_after=30)
        conn.execute(update(jobs_t).where(jobs_t.c.token == token)
                     .values(heartbeat_on=time.time() - 10))
    fresh = new_job(log, project, DELETE, [project.heads[8]])
    with get_write_engine().begin() as conn:
        claim(conn, fresh, "live-worker", stale_after=30)
        conn.execute(update(jobs_t).where(jobs_t.c.token == fresh).values(status="processing"))

    assert run(token, deps=deps(log), cfg=cfg(stale_after=30), requeue=lambda t: None) == "skipped"
    queued: list[str] = []
    assert reap(log=log, stale_after=30, queued_stale_after=120, requeue=queued.append) == []
    assert reap(log=log, stale_after=5, queued_stale_after=120, requeue=queued.append) == [token]
    assert queued == [token]
    assert job_row(token).owner is None
    # the re-queue bumped the heartbeat: another reaper pass does not re-queue it again
    assert reap(log=log, stale_after=5, queued_stale_after=120, requeue=queued.append) == []
    assert run(token, deps=deps(log), cfg=cfg(), requeue=lambda t: None) == "done"
    row = job_row(token)
    assert row.info == {"total": 5, "remaining": 0, "failed": 0, "errors": []}
    after = records(project.gid)
    assert all(after[h].status == "deleted" for h in heads)
    assert len(workflow([after[h].id for h in heads])) == 5
    assert [e["data"]["status"] for e in job_events(log, token)].count("done") == 1


def test_reaper_leaves_a_sliced_job_waiting_in_the_queue(
    log: HookedLog, project: SeededProject
) -> None:
    """A job that gave its worker back after a slice waits in the queue without a lease: a
    wait longer than ``stale_after`` (a backlog) does not make the reaper send it a second
    message; only ``queued_stale_after`` (its message lost) does."""
    recs = records(project.gid)
    heads = [h for h in project.heads if recs[h].status != "deleted"][:5]
    token = new_job(log, project, DELETE, heads)
    assert run(token, deps=deps(log), cfg=cfg(batch_size=2, slice_seconds=0),
               requeue=lambda t: None) == "sliced"
    row = job_row(token)
    assert (row.status, row.owner) == ("processing", None)
    queued: list[str] = []
    for waited in (10, 60):
        with get_write_engine().begin() as conn:
            conn.execute(update(jobs_t).where(jobs_t.c.token == token)
                         .values(heartbeat_on=time.time() - waited))
        assert reap(log=log, stale_after=5, queued_stale_after=120,
                    requeue=queued.append) == []
    with get_write_engine().begin() as conn:
        conn.execute(update(jobs_t).where(jobs_t.c.token == token)
                     .values(heartbeat_on=time.time() - 200))
    assert reap(log=log, stale_after=5, queued_stale_after=120, requeue=queued.append) == [token]
    assert run(queued[0], deps=deps(log), cfg=cfg(), requeue=lambda t: None) == "done"


def test_reaper_requeues_a_queued_job_whose_message_was_lost(
    log: HookedLog, project: SeededProject
) -> None:
    """A job still queued after ``queued_stale_after`` is re-queued (its message was lost)."""
    token = new_job(log, project, DELETE, [project.heads[0]])
    queued: list[str] = []
    assert reap(log=log, stale_after=30, queued_stale_after=120, requeue=queued.append) == []
    with get_write_engine().begin() as conn:
        conn.execute(update(jobs_t).where(jobs_t.c.token == token)
                     .values(heartbeat_on=time.time() - 200))
    assert reap(log=log, stale_after=30, queued_stale_after=120, requeue=queued.append) == [token]
    assert run(queued[0], deps=deps(log), cfg=cfg(), requeue=lambda t: None) == "done"


@pytest.mark.parametrize("repair", ["announce", "reaper", "next-run"])
def test_unannounced_finished_job_is_announced_exactly_once(
    log: HookedLog, project: SeededProject, repair: str
) -> None:
    """A job committed ``done`` whose terminal event was never appended (crash in between) is
    announced by ``announce`` (also via the reaper or a later run), exactly once."""
    token = new_job(log, project, DELETE, [project.heads[0]])
    log.fail_terminal = True
    with pytest.raises(redis.ConnectionError):
        run(token, deps=deps(log), cfg=cfg(), requeue=lambda t: None)
    row = job_row(token)
    assert (row.status, row.announced, row.owner) == ("done", False, None)
    assert "done" not in [e["data"]["status"] for e in job_events(log, token)]

    if repair == "announce":
        assert announce(deps(log), token) is True
    elif repair == "reaper":
        assert reap(log=log, stale_after=30, queued_stale_after=120, requeue=pytest.fail) == []
        assert job_row(token).announced is False  # finished too recently: maybe still running
        with get_write_engine().begin() as conn:
            conn.execute(update(jobs_t).where(jobs_t.c.token == token)
                         .values(finished_on=time.time() - 60))
        assert reap(log=log, stale_after=30, queued_stale_after=120, requeue=pytest.fail) == []
    else:
        assert run(token, deps=deps(log), cfg=cfg(), requeue=lambda t: None) == "skipped"
    assert job_row(token).announced is True
    assert announce(deps(log), token) is False
    # announced flag lost after the append (crash between append and flag): the once-key holds
    with get_write_engine().begin() as conn:
        conn.execute(update(jobs_t).where(jobs_t.c.token == token).values(announced=False))
    assert announce(deps(log), token) is True
    events = job_events(log, token)
    assert [e["data"]["status"] for e in events].count("done") == 1
    assert events[-1]["data"]["info"] == {"total": 1, "remaining": 0, "failed": 0, "errors": []}


def test_malformed_stored_selection_rejects_the_job(log: HookedLog, project: SeededProject) -> None:
    """A job whose stored selection does not parse (a row of an older version, without the
    parsed form, or one whose parsed form is of another version) ends rejected with the
    parser's message."""
    token = new_job(log, project, DELETE, [project.heads[0]])
    with get_write_engine().begin() as conn:
        conn.execute(update(jobs_t).where(jobs_t.c.token == token)
                     .values(params={"selection": [{"bogus": 1}]}, selection={"v": 0}))
    assert run(token, deps=deps(log), cfg=cfg(), requeue=lambda t: None) == "rejected"
    row = job_row(token)
    assert row.status == "rejected"
    assert row.info["error"].startswith("Selection error: entry 0:")
    assert records(project.gid)[project.heads[0]].status != "deleted"
