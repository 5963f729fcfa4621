"""Every job endpoint of SPEC §5 exists in the Unicat dialect: each answers a job token at
once in the envelope, and ``jobs/get`` knows the job by its catalogue name."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from api.app import app
from models.seed import SeedResult
from tests.api.dialects import jwt_of

pytestmark = pytest.mark.services

ENDPOINTS = [
    ("records/bulk/delete", "bulk_delete_records"),
    ("records/bulk/undelete", "bulk_undelete_records"),
    ("records/bulk/permanent_delete", "bulk_permanent_delete_records"),
    ("records/permanent_delete", "permanent_delete_record"),
    ("schema/bulk/commit", "bulk_commit_schema_items"),
    ("schema/bulk/revert", "bulk_revert_schema_items"),
    ("schema/bulk/save_as_new", "bulk_save_as_new_schema_items"),
    ("schema/bulk/copy", "bulk_copy_schema_items"),
]


@pytest.mark.parametrize(("endpoint", "job"), ENDPOINTS, ids=[e for e, _ in ENDPOINTS])
def test_job_endpoint_answers_a_token(seeded: SeedResult, endpoint: str, job: str) -> None:
    """The endpoint answers ``{"success": true, "result": {"job.token"}}`` and the job is
    queued under its catalogue name."""
    client = TestClient(app, raise_server_exceptions=False)
    project = seeded.projects[0]
    headers = {"Authorization": f"Bearer {jwt_of(client, project)}"}
    head = project.heads[0]
    body = {"record": head} if endpoint == "records/permanent_delete" else {"selection": [head]}
    r = client.post(f"/api/p/{project.gid}/{endpoint}", json=body, headers=headers)
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["success"] is True
    token = answer["result"]["job.token"]
    got = client.post(f"/api/p/{project.gid}/jobs/get", json={"job": token}, headers=headers)
    assert got.json()["result"]["job"]["job"] == job
    assert got.json()["result"]["job"]["status"] == "queued"
