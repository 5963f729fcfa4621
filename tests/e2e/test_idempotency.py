"""Idempotent submits across processes: concurrent identical requests under one
``Idempotency-Key``, sent to two real web processes started from the Procfile's command,
queue exactly one job; every other request answers that job's token or 409."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, select

from models import IdempotencyKey, Job
from models.engine import get_engine
from models.seed import SeededProject, SeedResult
from tests.e2e import procfile
from tests.e2e.conftest import Proc, free_port

pytestmark = pytest.mark.e2e

#: Requests sent at once, spread over the web processes.
REQUESTS = 24


@pytest.fixture
def webs(schema: Engine) -> Iterator[list[str]]:
    """Two web processes on the test database (no worker: the job stays queued)."""
    ports = [free_port(), free_port()]
    procs: list[Proc] = []
    try:
        for port in ports:
            procs.append(procfile.web(port))
        yield [f"http://127.0.0.1:{port}" for port in ports]
    finally:
        procfile.stop_all(procs)


async def burst(webs: list[str], project: SeededProject, path: str, body: dict[str, Any]
                ) -> list[httpx.Response]:
    async with httpx.AsyncClient(timeout=60) as client:
        auth = await client.post(f"{webs[0]}/api/p/{project.gid}/auth",
                                 json={"api_key": project.api_key})
        # Connections opened beforehand, so that the requests arrive together.
        await asyncio.gather(*(client.get(f"{webs[i % len(webs)]}/livez")
                               for i in range(REQUESTS)))
        jwt = auth.headers["authorization"]
        headers = {"Authorization": f"Bearer {jwt}", "Idempotency-Key": "burst-1"}
        return await asyncio.gather(*(
            client.post(f"{webs[i % len(webs)]}/api/p/{project.gid}/{path}", json=body,
                        headers=headers)
            for i in range(REQUESTS)))


ROUTES = {
    # queued in batches by each process's queueing thread (api.queueing.queue_for)
    "records/bulk/delete": lambda p: {"selection": [{"children": p.root}]},
    # queued by the request's own thread (api.queueing.queue_job)
    "schema/bulk/commit": lambda p: {"selection": []},
}


@pytest.mark.parametrize("path", list(ROUTES))
def test_concurrent_identical_requests_queue_one_job(webs: list[str], seeded: SeedResult,
                                                     path: str) -> None:
    """Identical requests under one key, at once, over two web processes: one job row;
    each answer is that job's token (200) or 409 in the Unicat envelope."""
    project = seeded.projects[0]
    answers = asyncio.run(burst(webs, project, path, ROUTES[path](project)))
    with get_engine().connect() as conn:
        jobs = list(conn.execute(select(Job.__table__.c.token).where(
            Job.__table__.c.project_gid == project.gid)).scalars())
        [key] = list(conn.execute(select(IdempotencyKey.__table__)))
    assert len(jobs) == 1 and key.job_token == jobs[0]
    for r in answers:
        if r.status_code == 200:
            assert r.json()["result"]["job.token"] == jobs[0], r.text
        else:
            assert r.status_code == 409, r.text
            assert r.json()["success"] is False and r.json()["result"]["code"] == 409
    assert any(r.status_code == 200 for r in answers)
