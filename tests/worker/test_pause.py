"""Pause and resume (:mod:`worker.pausing`) with REAL worker processes: a running job stops
after its batch and says so (``info.paused``), the reaper leaves it alone, resume finishes
it where it stopped; a queued job of a paused project waits; a paused job can be cancelled.
Then the rules a worker process cannot show in order, with the runner driven in-process.

Every assertion is about states, order and counts; "it waits" is checked by polling for a
moment (the reaper run meanwhile), never against a duration."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import pytest
from sqlalchemy import select, update

from bulkjobs import keys
from bulkjobs.synclog import SyncLog
from models.engine import get_engine, get_write_engine
from models.pauses import EVERY_PROJECT, JobPause, pause
from models.seed import SeededProject, SeedResult
from tests.worker.deployment import Deployment, wait_for
from tests.worker.helpers import (
    assert_event_stream,
    cfg,
    deps,
    entries,
    job_events,
    job_row,
    jobs_t,
    new_job,
    records,
    space_events,
)
from worker import runner
from worker.deps import Deps
from worker.pausing import pause_jobs, resume
from worker.reaper import reap
from worker.submit import cancel

pytestmark = pytest.mark.services

DELETE = "bulk_delete_records"


def leaves(project: SeededProject) -> list[str]:
    """Live records at the bottom of the tree (deleting each is independent)."""
    recs = records(project.gid)
    return sorted((g for g, r in recs.items() if r.treelevel == 3 and r.status != "deleted"),
                  key=lambda g: recs[g].id)


def events(log: SyncLog, token: str) -> list[dict[str, Any]]:
    return space_events(log, keys.CC_SPACE, token)


def paused_flags(log: SyncLog, token: str) -> list[tuple[str, bool]]:
    """``(status, info.paused)`` of each of the job's events that carries ``info.paused``."""
    return [(e["data"]["status"], e["data"]["info"]["paused"]) for e in events(log, token)
            if "paused" in e["data"]["info"]]


def sender(dep: Deployment) -> Any:
    def send(tokens: Sequence[str]) -> None:
        for token in tokens:
            dep.enqueue(token)
    return send


def still(dep: Deployment, token: str, rounds: int = 20) -> Any:
    """Poll the job for a moment, the reaper running each time as if every waiting job's
    message were overdue: it must neither move nor be re-sent.  Returns the row."""
    first = dep.row(token)
    for _ in range(rounds):
        assert token not in dep.reap(queued_stale_after=0.0)
        row = dep.row(token)
        assert (row.status, row.owner, row.position, row.info) == (
            first.status, None, first.position, first.info)
        time.sleep(0.1)
    return first


def test_a_running_job_stops_after_its_batch_waits_and_resumes_where_it_stopped(
    deployment: Deployment, seeded: SeedResult,
) -> None:
    """Pausing the project of a job a real worker runs: the job stops after the batch in
    hand with an ``info.paused: true`` event, status still ``processing``, its lease handed
    back uncounted; its ``remaining`` does not move and the reaper does not take it while
    paused; resume sends it again (an ``info.paused: false`` event) and it finishes ``done``
    with every item processed once."""
    project = seeded.projects[0]
    targets = leaves(project)[:200]  # a batch each: enough to be paused half-way
    deployment.worker("pausee", BATCH_SIZE="1")
    token = deployment.submit(project.gid, DELETE, targets)
    wait_for(lambda: (deployment.row(token).info or {}).get("remaining", len(targets))
             <= len(targets) - 5, "a few batches")
    assert pause_jobs(deps(deployment.log), project.gid, by="tester")
    wait_for(lambda: paused_flags(deployment.log, token), "the paused event")
    row = still(deployment, token)
    assert row.status == "processing" and row.info["paused"] is True
    assert 0 < row.info["remaining"] < len(targets)
    assert row.failures == 0
    assert paused_flags(deployment.log, token) == [("processing", True)]
    stopped_at = row.info["total"] - row.info["remaining"]
    after = records(project.gid)
    assert [g for g in targets if after[g].status == "deleted"] == targets[:stopped_at]

    assert resume(deps(deployment.log), project.gid, enqueue=sender(deployment)) == [token]
    row = deployment.wait_finished([token], reap_every=None)[token]
    assert row.status == "done"
    assert row.info == {"total": len(targets), "remaining": 0, "failed": 0, "errors": []}
    assert row.failures == 0
    after = records(project.gid)
    assert all(after[g].status == "deleted" for g in targets)
    assert sorted(entries(token, "delete")) == sorted(after[g].id for g in targets)
    assert paused_flags(deployment.log, token) == [("processing", True), ("processing", False)]
    assert_event_stream(events(deployment.log, token), total=len(targets), terminal="done")


def test_a_queued_job_of_a_paused_project_waits_and_runs_after_resume(
    deployment: Deployment, seeded: SeedResult,
) -> None:
    """A job queued while its project is paused is not started by the worker that takes its
    message (an ``info.paused: true`` event, status ``queued``) nor re-sent by the reaper,
    while a job of another project runs; after resume it runs to ``done``."""
    held_project, other = seeded.projects
    assert pause_jobs(deps(deployment.log), held_project.gid, by="tester")
    deployment.worker("holder")
    held = deployment.submit(held_project.gid, DELETE, leaves(held_project)[:3])
    running = deployment.submit(other.gid, DELETE, leaves(other)[:3])
    wait_for(lambda: paused_flags(deployment.log, held), "the held event")
    assert deployment.wait_finished([running], reap_every=None)[running].status == "done"
    row = still(deployment, held)
    assert (row.status, row.attempts, row.info) == ("queued", 0, {"paused": True})

    assert resume(deps(deployment.log), held_project.gid, enqueue=sender(deployment)) == [held]
    row = deployment.wait_finished([held], reap_every=None)[held]
    assert row.status == "done"
    assert row.info == {"total": 3, "remaining": 0, "failed": 0, "errors": []}
    assert paused_flags(deployment.log, held) == [("queued", True), ("queued", False)]


def test_cancelling_a_paused_job_rejects_it_at_once(
    deployment: Deployment, seeded: SeedResult,
) -> None:
    """Cancelling a job stopped by a pause, and one held in the queue by it, ends each
    ``rejected`` with ``info.cancelled`` at once, while the project is still paused; the
    stopped job's items after its last batch are untouched, and resume has nothing left to
    send."""
    project = seeded.projects[0]
    targets = leaves(project)
    deployment.worker("cancellee", BATCH_SIZE="1")
    running = deployment.submit(project.gid, DELETE, targets[:-3])
    wait_for(lambda: (deployment.row(running).info or {}).get("remaining", len(targets))
             <= len(targets) - 10, "a few batches")
    assert pause_jobs(deps(deployment.log), project.gid, by="tester")
    queued = deployment.submit(project.gid, DELETE, targets[-3:])
    wait_for(lambda: paused_flags(deployment.log, running) and paused_flags(
        deployment.log, queued), "both paused")
    for token in (running, queued):
        cancel(project_gid=project.gid, token=token, log=deployment.log)
        row = deployment.row(token)
        assert row.status == "rejected"
        assert (row.info["error"], row.info["cancelled"]) == ("cancelled", True)
        assert "paused" not in row.info
        assert [e["data"]["status"] for e in events(deployment.log, token)][-1] == "rejected"
    row = deployment.row(running)
    processed = row.info["total"] - row.info["remaining"]
    after = records(project.gid)
    assert [g for g in targets if after[g].status == "deleted"] == targets[:processed]
    assert resume(deps(deployment.log), project.gid, enqueue=sender(deployment)) == []


# --- in-process: the rules one worker process cannot show in order -----------------------------


def drive(log: SyncLog, token: str, **kw: Any) -> tuple[str, list[str]]:
    """One run of the job in this process; what it returned and what it re-queued."""
    requeued: list[str] = []
    outcome = runner.run(token, deps=Deps.default(log), cfg=cfg(**kw), requeue=requeued.append)
    return outcome, requeued


def pauses() -> set[str]:
    with get_engine().connect() as conn:
        return set(conn.execute(select(JobPause.scope)).scalars())  # type: ignore[call-overload]


def test_the_pause_of_every_project_holds_each_project_and_outlasts_a_project_resume(
    log: SyncLog, seeded: SeedResult,
) -> None:
    """The ops switch pauses the jobs of every project; resuming one project meanwhile sends
    nothing; resuming every project sends the jobs of every project except one paused on its
    own, which waits for its own resume."""
    first, second = seeded.projects
    a = new_job(log, first, DELETE, leaves(first)[:2])
    b = new_job(log, second, DELETE, leaves(second)[:2])
    sent: list[str] = []
    d = deps(log)
    assert pause_jobs(d, EVERY_PROJECT, by="ops")
    assert not pause_jobs(d, EVERY_PROJECT, by="ops")  # twice: a no-op
    assert pause_jobs(d, second.gid, by="owner")
    assert drive(log, a) == ("paused", []) and drive(log, b) == ("paused", [])
    assert resume(d, first.gid, enqueue=sent.extend) == []  # still paused by the switch
    assert resume(d, EVERY_PROJECT, enqueue=sent.extend) == [a]
    assert pauses() == {second.gid}
    assert drive(log, a) == ("done", []) and drive(log, b) == ("paused", [])
    assert resume(d, second.gid, enqueue=sent.extend) == [b]
    assert drive(log, b) == ("done", [])
    assert sent == [a, b]
    assert [job_row(t).status for t in (a, b)] == ["done", "done"]


def test_a_run_resumed_while_it_stopped_re_queues_itself_and_drops_the_mark(
    log: SyncLog, seeded: SeedResult, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A resume that comes after a run saw the pause but before it handed the job back finds
    the job still leased and sends nothing; the run, reading the pause again after its
    hand-back, re-queues the job itself, and its next run drops the ``paused`` mark with an
    ``info.paused: false`` event and finishes it."""
    project = seeded.projects[0]
    token = new_job(log, project, DELETE, leaves(project)[:4])
    d = deps(log)
    sent: list[str] = []
    real_stopped, real_claim = runner.stopped, runner.claim_row

    def claimed_then_paused(conn: Any, *args: Any, **kw: Any) -> Any:
        claimed = real_claim(conn, *args, **kw)
        assert claimed and pause(conn, project.gid, by="tester")  # in the claim's transaction
        return claimed

    def resumed_meanwhile(info: dict[str, Any]) -> dict[str, Any]:
        assert resume(d, project.gid, enqueue=sent.extend) == []  # still leased
        return real_stopped(info)

    monkeypatch.setattr(runner, "claim_row", claimed_then_paused)
    monkeypatch.setattr(runner, "stopped", resumed_meanwhile)
    assert drive(log, token, batch_size=1) == ("paused", [token])
    assert sent == [] and pauses() == set() and job_row(token).info["paused"] is True
    monkeypatch.undo()
    assert drive(log, token, batch_size=1) == ("done", [])
    row = job_row(token)
    assert row.info == {"total": 4, "remaining": 0, "failed": 0, "errors": []}
    flags = [(e["data"]["status"], e["data"]["info"]["paused"]) for e in job_events(log, token)
             if "paused" in e["data"]["info"]]
    assert flags == [("processing", True), ("processing", False)]


def test_the_reaper_leaves_paused_jobs_alone_and_takes_them_again_after_resume(
    log: SyncLog, seeded: SeedResult,
) -> None:
    """A job whose worker died (a stale lease) and a job waiting for its message are not
    re-queued by the reaper while their project is paused, by its own pause or every
    project's; once resumed, the reaper takes the stale one again."""
    project = seeded.projects[0]
    dead = new_job(log, project, DELETE, leaves(project)[:2])
    waiting = new_job(log, project, DELETE, leaves(project)[2:4])
    with get_write_engine().begin() as conn:
        conn.execute(update(jobs_t).where(jobs_t.c.token == dead).values(
            owner="gone:1:x", heartbeat_on=0.0, status="processing"))
    d = deps(log)
    for scope in (project.gid, EVERY_PROJECT):
        assert pause_jobs(d, scope, by="tester")
        assert reap(log=log, stale_after=0.0, queued_stale_after=0.0, requeue=pytest.fail) == []
        resume(d, scope, enqueue=lambda tokens: None)
    assert set(reap(log=log, stale_after=0.0, queued_stale_after=0.0,
                    requeue=lambda t: None)) == {dead, waiting}
