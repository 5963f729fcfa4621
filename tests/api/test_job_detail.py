"""``jobs/detail`` answers one job in full — its selection, other parameters, created,
started and finished times, and its events as the sync log holds them — while ``jobs/get``
and ``jobs/list`` stay lean; a job it cannot show is the Unicat envelope's 404."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from models.seed import SeedResult
from tests.api.test_job_failures import already_deleted, queue_delete
from tests.security.conftest import call, finish, jwt_of

pytestmark = pytest.mark.services


def detail(client: TestClient, seeded: SeedResult, token: str, index: int = 0) -> Any:
    return call(client, f"/api/p/{seeded.projects[index].gid}/jobs/detail", jwt_of(seeded),
                {"job": token})


def test_jobs_detail_has_selection_times_and_events(client: TestClient, seeded: SeedResult):
    """A finished delete: its selection, times in order (created ≤ started ≤ finished) and
    its events from queued to done, in cursor order, the last one its final state."""
    bad = already_deleted(seeded.projects[0], 2)
    token = queue_delete(client, seeded, bad)
    finish(token)
    answer = detail(client, seeded, token)
    assert answer.status_code == 200, answer.text
    result = answer.json()["result"]
    job = result["job"]
    assert job["token"] == token and job["status"] == "done"
    assert job["selection"] == bad and job["selection.size"] == 2 and job["params"] == {}
    assert job["created_on"] <= job["started_on"] <= job["finished_on"]
    assert job["info"]["failed"] == 2
    events = result["events"]
    assert [e["data_key"] for e in events] == [token] * len(events)
    assert events[0]["action"] == "INSERT" and events[0]["data"]["status"] == "queued"
    assert events[-1]["data"]["status"] == "done"
    assert [e["cursor"] for e in events] == sorted(e["cursor"] for e in events)
    assert result["events.complete"] is True
    lean = call(client, f"/api/p/{seeded.projects[0].gid}/jobs/get", jwt_of(seeded),
                {"job": token}).json()["result"]["job"]
    assert "selection" not in lean and "started_on" not in lean


def test_jobs_detail_refuses_unknown_and_other_projects_jobs(client: TestClient,
                                                             seeded: SeedResult):
    """An unknown job and another project's job are 404 in the Unicat envelope; a body
    without ``job`` is a 400."""
    token = queue_delete(client, seeded, already_deleted(seeded.projects[0], 1))
    for answer in (detail(client, seeded, "0" * 36), detail(client, seeded, token, index=1)):
        assert answer.status_code == 404, answer.text
        assert answer.json()["success"] is False
    missing = call(client, f"/api/p/{seeded.projects[0].gid}/jobs/detail", jwt_of(seeded), {})
    assert missing.status_code == 400 and missing.json()["success"] is False
