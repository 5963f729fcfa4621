"""One run per lease (``worker/runner.py``): a job's lease is named after the run that holds
it, so a second delivery of the same message — or a copy the reaper sent — never runs beside
a live first run; it hands back without touching anything."""

from __future__ import annotations

import uuid

import pytest

from bulkjobs import keys
from bulkjobs.synclog import SyncLog
from models.engine import get_write_engine
from models.seed import SeededProject
from tests.worker.deployment import Deployment, wait_for
from tests.worker.helpers import assert_consistent, entries, new_job, records
from worker.lease import claim, new_owner
from worker.submit import submit

pytestmark = pytest.mark.services

DELETE = "bulk_delete_records"


def test_a_live_lease_is_never_shared(log: SyncLog, project: SeededProject) -> None:
    """A claim succeeds only when nobody holds a live lease — not even for the holder's own
    name; the retry of a run that could not hand back takes over its lease once; a stale
    lease is taken over; every run's name is its own."""
    token = new_job(log, project, DELETE, [project.heads[0]])
    with get_write_engine().begin() as conn:
        assert claim(conn, token, "a", stale_after=30)
        assert not claim(conn, token, "b", stale_after=30)
        assert not claim(conn, token, "a", stale_after=30)
        assert claim(conn, token, "c", stale_after=30, takeover="a")
        assert not claim(conn, token, "d", stale_after=30, takeover="a")
        assert claim(conn, token, "e", stale_after=-1)  # every lease looks stale
    assert len({new_owner() for _ in range(100)}) == 100


@pytest.mark.timeout(300)
def test_a_message_delivered_twice_runs_once(
    deployment: Deployment, project: SeededProject,
) -> None:
    """The same message (one task id) delivered twice, to two worker processes at once: one
    run claims the job and does all the work, the other finds the lease live and hands back;
    the job ends ``done`` after one claim, with one workflow entry per record."""
    recs = records(project.gid)
    targets = sorted((g for g, r in recs.items() if r.treelevel == 3 and r.status != "deleted"),
                     key=lambda g: recs[g].id)
    first = deployment.worker("first", BATCH_SIZE="4", SLICE_SECONDS="1000")
    second = deployment.worker("second", BATCH_SIZE="4", SLICE_SECONDS="1000")
    task_id = str(uuid.uuid4())

    def twice(token: str) -> None:
        for _ in range(2):
            deployment.app.send_task("bulkjobs.run_job", args=[token], queue=keys.jobs_queue(),
                                     task_id=task_id)

    token = submit(project_gid=project.gid, job=DELETE, params={"selection": targets},
                   actor={"type": "user", "id": "tester"}, log=deployment.log, enqueue=twice)
    # both workers took the message (each holds at most one)
    wait_for(lambda: all(f"run_job[{task_id}] received" in w.output()
                         for w in (first, second)), "both deliveries taken", timeout=60)
    row = deployment.wait_finished([token], timeout=240, reap_every=None)[token]
    assert row.status == "done", row.info
    assert row.attempts == 1  # one claim: the second delivery never ran the job
    assert (row.info["total"], row.info["remaining"], row.info["failed"]) == (len(targets), 0, 0)
    assert len(entries(token, "delete")) == len(targets)
    assert_consistent(project.gid)
