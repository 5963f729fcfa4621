"""The periodic tasks (``worker/app.py``) and the reaper's re-sending (``worker/reaper.py``)
under a backlog: the reaper and the trimming have a queue of their own that every worker
consumes, so a backlog of jobs does not hold them up; their copies expire after one interval,
so a busy spell does not pile them up; and a job waiting in a long backlog is not sent a
second message while the broker still holds its first."""

from __future__ import annotations

import re
import time
import uuid

import pytest

from bulkjobs import keys
from bulkjobs.settings import get_settings
from models.seed import SeededProject
from tests.worker.deployment import STALE_AFTER, Deployment, wait_for
from worker.app import make_celery
from worker.reaper import reap

pytestmark = pytest.mark.services

DELETE = "bulk_delete_records"


def beat_options(deployment: Deployment, task: str) -> dict[str, object]:
    """The send options ``celery beat`` uses for ``task``."""
    [entry] = [e for e in deployment.app.conf.beat_schedule.values() if e["task"] == task]
    return dict(entry.get("options", {}))


def test_periodic_tasks_have_their_own_queue_and_expire_after_their_interval() -> None:
    """Every beat entry goes to the maintenance queue with an expiry of its interval, and
    workers consume that queue beside the jobs' (no ``-Q`` needed)."""
    app = make_celery(get_settings())
    entries = list(app.conf.beat_schedule.values())
    assert {"bulkjobs.reap", "bulkjobs.trim"} <= {e["task"] for e in entries}
    for entry in entries:
        assert entry["options"] == {"queue": keys.maintenance_queue(),
                                    "expires": entry["schedule"]}
    assert {q.name for q in app.conf.task_queues} == {keys.jobs_queue(), keys.maintenance_queue()}


@pytest.mark.timeout(180)
def test_a_backlog_of_jobs_neither_delays_nor_multiplies_the_reaper(
    deployment: Deployment,
) -> None:
    """A backlog of 60 job messages, two copies of the reaper that expired while no worker
    ran, and a fresh copy, all waiting before a worker starts: the worker runs the fresh
    reaper before most of the backlog, and drops the expired copies."""
    options = beat_options(deployment, "bulkjobs.reap")
    backlog = [str(uuid.uuid4()) for _ in range(60)]  # jobs that do not exist: quick to skip
    for token in backlog:
        deployment.enqueue(token)
    stale = [deployment.app.send_task("bulkjobs.reap", **{**options, "expires": 1.0}).id
             for _ in range(2)]
    time.sleep(1.5)  # past the stale copies' expiry
    fresh = deployment.app.send_task("bulkjobs.reap", **options).id
    worker = deployment.worker("maintenance")
    wait_for(lambda: f"bulkjobs.reap[{fresh}] succeeded" in worker.output(),
             "the fresh reaper ran", timeout=120)
    received = re.findall(r"Task (bulkjobs\.\w+)\[([0-9a-f-]+)\] received", worker.output())
    before = [task for task, _ in received[:received.index(("bulkjobs.reap", fresh))]]
    assert before.count("bulkjobs.run_job") < len(backlog) // 2
    for task_id in stale:
        assert f"bulkjobs.reap[{task_id}] succeeded" not in worker.output()


def queued_messages(deployment: Deployment) -> int:
    return sum(int(deployment.client.llen(name)) for name in keys.jobs_queue_lists())


def test_a_job_waiting_in_the_broker_is_not_sent_again(
    deployment: Deployment, project: SeededProject,
) -> None:
    """A queued job whose message still waits in the broker's queue keeps that one message
    however long it waits; once the broker lost it (its data gone), the reaper sends one."""
    from worker.app import oldest_waiting

    token = deployment.submit(project.gid, DELETE, [project.heads[0]])
    assert queued_messages(deployment) == 1
    time.sleep(1.2)  # waiting longer than queued_stale_after below

    def reaped() -> list[str]:
        return reap(log=deployment.log, stale_after=STALE_AFTER, queued_stale_after=1.0,
                    requeue=deployment.enqueue,
                    oldest_waiting=lambda: oldest_waiting(deployment.app))

    for _ in range(3):
        assert reaped() == []
    assert queued_messages(deployment) == 1
    deployment.flush_broker()
    assert reaped() == [token]
    assert queued_messages(deployment) == 1
