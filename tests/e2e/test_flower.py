"""Flower against the workers, started as the README says (``celery -A worker.app flower``)
with the workers' environment: it sees the running worker through its HTTP API and, from
the worker's task events (``-E``), the ``bulkjobs.run_job`` task of a job."""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from models.seed import SeedResult
from tests.e2e.conftest import Proc, System, free_port, wait_for
from tests.e2e.helpers import Api

pytestmark = pytest.mark.e2e

CELERY = Path(sys.executable).parent / "celery"


@pytest.fixture
def flower(system: System) -> Iterator[str]:
    """Flower on a free loopback port; its API open without auth (tests only)."""
    port = free_port()
    proc = Proc("flower", [str(CELERY), "-A", "worker.app", "flower", f"--port={port}",
                           "--address=127.0.0.1"],
                {**os.environ, "FLOWER_UNAUTHENTICATED_API": "true"}).start()
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: httpx.get(f"{url}/healthcheck").status_code == 200, "flower",
                 timeout=60)
        yield url
    finally:
        proc.stop()


def hostname(worker: Proc) -> str:
    """The worker's node name as Celery expands it (``%h`` is this machine's host name)."""
    name = worker.args[worker.args.index("--hostname") + 1]
    return name.replace("%h", socket.gethostname())


def test_flower_sees_the_worker_and_its_job_task(flower: str, system: System,
                                                 seeded: SeedResult):
    """/api/workers lists the live worker (it answers Flower's inspect broadcast) and
    /api/tasks shows the run_job task of a job it ran, succeeded, with the job token."""
    node = hostname(system.procs["worker"])
    workers: dict = {}

    def worker_listed() -> bool:
        nonlocal workers
        workers = httpx.get(f"{flower}/api/workers", params={"refresh": "1"},
                            timeout=20).json()
        return node in workers

    wait_for(worker_listed, f"worker {node} in Flower", timeout=60)
    assert workers[node]["stats"]["pool"]["max-concurrency"] == 1
    assert "bulkjobs.run_job" in workers[node]["registered"]

    project = seeded.projects[0]
    api = Api(system.web_url, project.gid)
    assert api.auth(project.api_key)["success"]
    token = api.queue("records/bulk/delete", project.heads[:1])
    tasks: dict = {}

    def task_succeeded() -> bool:
        nonlocal tasks
        tasks = httpx.get(f"{flower}/api/tasks", params={"taskname": "bulkjobs.run_job"},
                          timeout=20).json()
        return any(token in str(t.get("args")) and t.get("state") == "SUCCESS"
                   for t in tasks.values())

    wait_for(task_succeeded, "the job's task in Flower", timeout=60)
    (task,) = [t for t in tasks.values() if token in str(t.get("args"))]
    assert task["worker"] == node
