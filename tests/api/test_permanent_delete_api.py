"""The Unicat permanent-delete endpoints (in-process ASGI client, real database and Redis);
the queued jobs are run in-process by the runner."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

import api.unicat.jobs
from bulkjobs.connections import get_synclog
from models import Job, Record, RecordDeletion
from models.engine import get_engine
from models.seed import SeedResult
from tests.api.pool import holding_at
from tests.worker.helpers import PUBLIC_STATUS
from worker.deps import Deps, RunConfig
from worker.runner import run

pytestmark = pytest.mark.services


def call(client: TestClient, seeded: SeedResult, endpoint: str, body: dict[str, Any]) -> Any:
    project = seeded.projects[0]
    jwt = client.post(f"/api/p/{project.gid}/auth",
                      json={"api_key": project.api_key}).headers["authorization"]
    return client.post(f"/api/p/{project.gid}/{endpoint}", json=body,
                       headers={"Authorization": f"Bearer {jwt}"})


def run_job(token: str) -> Any:
    run(token, deps=Deps.default(get_synclog()), cfg=RunConfig(slice_seconds=60),
        requeue=lambda t: None)
    with get_engine().connect() as conn:
        return conn.execute(select(Job.__table__).where(Job.token == token)).one()


def status(gid: str) -> str | None:
    """The record's public status (``deleted`` while it has a deletion row); ``None`` once
    it is gone."""
    with get_engine().connect() as conn:
        return conn.execute(
            select(PUBLIC_STATUS).select_from(Record)
            .outerjoin(RecordDeletion, RecordDeletion.record_id == Record.id)
            .where(Record.gid == gid)).scalar()


def test_single_permanent_delete_answers_parent_and_job_token(
    client: TestClient, seeded: SeedResult
) -> None:
    """`records/permanent_delete` answers `{"parent", "job.token"}` with the parent record in
    `data.records`; the job removes the record."""
    project = seeded.projects[0]
    head = next(h for h in project.heads if status(h) == "deleted")
    r = call(client, seeded, "records/permanent_delete", {"record": head})
    body = r.json()
    assert r.status_code == 200 and body["success"] is True, body
    assert body["result"]["parent"] == project.root
    assert set(body["data"]["records"]) == {project.root}
    row = run_job(body["result"]["job.token"])
    assert (row.job, row.status, row.result_status) == ("permanent_delete_record", "done", 200)
    assert status(head) is None


def test_single_permanent_delete_of_unknown_record_is_422(
    client: TestClient, seeded: SeedResult
) -> None:
    """An unknown record is refused before anything is queued."""
    r = call(client, seeded, "records/permanent_delete", {"record": "no-such-record"})
    assert r.status_code == 422 and r.json()["success"] is False


def test_bulk_permanent_delete_queues_the_job(client: TestClient, seeded: SeedResult) -> None:
    """`records/bulk/permanent_delete` queues `bulk_permanent_delete_records`; a malformed
    selection is a 1006 before queueing."""
    project = seeded.projects[0]
    deleted = [h for h in project.heads if status(h) == "deleted"]
    r = call(client, seeded, "records/bulk/permanent_delete", {"selection": deleted})
    row = run_job(r.json()["result"]["job.token"])
    assert (row.job, row.status, row.info["failed"]) == (
        "bulk_permanent_delete_records", "done", 0)
    assert all(status(h) is None for h in deleted)
    bad = call(client, seeded, "records/bulk/permanent_delete", {"selection": "nope"})
    assert bad.status_code == 422 and bad.json()["result"]["code"] == 1006


def test_single_permanent_delete_queues_without_holding_a_database_connection(
        client: TestClient, seeded: SeedResult, monkeypatch: pytest.MonkeyPatch) -> None:
    """The request hands its session's connection back before it queues the job
    (:mod:`tests.api.pool`)."""
    head = next(h for h in seeded.projects[0].heads if status(h) == "deleted")
    with holding_at(monkeypatch, api.unicat.jobs, "queue_job") as held:
        r = call(client, seeded, "records/permanent_delete", {"record": head})
    assert r.status_code == 200 and r.json()["result"]["parent"] == seeded.projects[0].root
    assert held == [False]
