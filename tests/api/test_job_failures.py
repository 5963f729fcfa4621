"""``jobs/failures`` pages through every failed item of a job with ``page.cursor``, and
``jobs/retry`` queues a job over exactly them; both answer Unicat's envelope for a job they
cannot serve, and a client's selection cannot name a job's failures itself."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

import api.unicat.jobs
from models import Job
from models.engine import get_engine
from models.seed import SeededProject, SeedResult
from tests.api.pool import holding_at
from tests.security.conftest import call, finish, jwt_of
from tests.worker.helpers import records

pytestmark = pytest.mark.services


def already_deleted(project: SeededProject, n: int) -> list[str]:
    """``n`` grandchildren of the seeded deleted head, in id order: deleting them fails."""
    recs = records(project.gid)
    head = next(h for h in project.heads if recs[h].status == "deleted")
    kids = [g for g, r in recs.items() if r.treelevel == 3 and r.mpath.startswith(recs[head].mpath)]
    return sorted(kids, key=lambda g: recs[g].id)[:n]


def queue_delete(client: TestClient, seeded: SeedResult, selection: list[Any]) -> str:
    project = seeded.projects[0]
    answer = call(client, f"/api/p/{project.gid}/records/bulk/delete", jwt_of(seeded),
                  {"selection": selection})
    assert answer.status_code == 200, answer.text
    return str(answer.json()["result"]["job.token"])


def failures(client: TestClient, seeded: SeedResult, token: str, **body: Any) -> Any:
    return call(client, f"/api/p/{seeded.projects[0].gid}/jobs/failures", jwt_of(seeded),
                {"job": token, **body})


def jobs_count() -> int:
    with get_engine().connect() as conn:
        return int(conn.execute(select(func.count()).select_from(Job)).scalar_one())


def test_jobs_failures_pages_through_every_failure(client: TestClient, seeded: SeedResult
                                                   ) -> None:
    """25 items fail: ``info.errors`` holds 20 of them, ``jobs/failures`` all 25 with their
    reasons, in item order, 10 a page with a cursor to follow and none after the last."""
    bad = already_deleted(seeded.projects[0], 25)
    token = queue_delete(client, seeded, bad)
    state = finish(token)
    assert state["info"]["failed"] == 25 and len(state["info"]["errors"]) == 20
    pages: list[list[dict[str, str]]] = []
    cursor = None
    while True:
        answer = failures(client, seeded, token, **{"page.size": 10},
                          **({"page.cursor": cursor} if cursor else {}))
        assert answer.status_code == 200, answer.text
        result = answer.json()["result"]
        assert result["job"] == token
        pages.append(result["failures"])
        cursor = result["page.cursor"]
        if cursor is None:
            break
    assert [len(p) for p in pages] == [10, 10, 5]
    assert [f for p in pages for f in p] == [{"gid": g, "reason": "already deleted"}
                                             for g in bad]
    whole = failures(client, seeded, token).json()["result"]
    assert len(whole["failures"]) == 25 and whole["page.cursor"] is None


def test_jobs_failures_refuses_a_job_it_cannot_show_and_a_bad_cursor(
    client: TestClient, seeded: SeedResult,
) -> None:
    """An unknown job and another project's job are 404, a cursor that does not decode 400,
    each in the Unicat envelope."""
    token = queue_delete(client, seeded, already_deleted(seeded.projects[0], 1))
    finish(token)
    other = seeded.projects[1]
    for answer in (failures(client, seeded, "no-such-job"),
                   call(client, f"/api/p/{other.gid}/jobs/failures", jwt_of(seeded),
                        {"job": token})):
        assert answer.status_code == 404, answer.text
        assert answer.json()["success"] is False
    answer = failures(client, seeded, token, **{"page.cursor": "not a cursor"})
    assert answer.status_code == 400 and answer.json()["success"] is False
    assert answer.json()["result"]["message"] == "invalid page.cursor"


def test_jobs_retry_queues_the_same_job_over_exactly_the_failed_items(
    client: TestClient, seeded: SeedResult,
) -> None:
    """The retry of a delete that failed 25 of its 27 items answers a new token (once per
    Idempotency-Key); the new job is a delete of 25 items, the failed ones (which fail
    again, still deleted), and its parameters name the job, not the items."""
    project = seeded.projects[0]
    recs = records(project.gid)
    good = sorted((g for g, r in recs.items() if r.status != "deleted" and r.treelevel == 3),
                  key=lambda g: recs[g].id)[:2]
    bad = already_deleted(project, 25)
    first = queue_delete(client, seeded, [*good, *bad])
    finish(first)
    before = jobs_count()
    answers = [call(client, f"/api/p/{project.gid}/jobs/retry", jwt_of(seeded),
                    {"job": first}, headers={"Idempotency-Key": "retry-1"}) for _ in range(2)]
    assert [a.status_code for a in answers] == [200, 200], answers[0].text
    again = answers[0].json()["result"]["job.token"]
    assert again != first and answers[1].json()["result"]["job.token"] == again
    assert jobs_count() == before + 1  # the same key queued it once
    with get_engine().connect() as conn:
        row = conn.execute(select(Job.job, Job.params).where(Job.token == again)).one()
    assert row.job == "bulk_delete_records"
    assert row.params == {"selection": [{"failures_of": first}]}
    state = finish(again)
    assert (state["status"], state["info"]["total"], state["info"]["failed"]) == ("done", 25, 25)
    listed = failures(client, seeded, again).json()["result"]["failures"]
    assert [f["gid"] for f in listed] == bad


def test_jobs_retry_refuses_a_job_it_cannot_retry_and_queues_nothing(
    client: TestClient, seeded: SeedResult,
) -> None:
    """A finished job without a failed item and a job still queued are 422 with the reason;
    an unknown job and another project's job 404; nothing is queued."""
    project, other = seeded.projects
    recs = records(project.gid)
    live = [g for g, r in recs.items() if r.status != "deleted" and r.treelevel == 3][:2]
    clean = queue_delete(client, seeded, live[:1])
    assert finish(clean)["info"]["failed"] == 0
    waiting = queue_delete(client, seeded, live[1:])
    before = jobs_count()
    path = f"/api/p/{project.gid}/jobs/retry"
    answer = call(client, path, jwt_of(seeded), {"job": clean})
    assert answer.status_code == 422, answer.text
    assert answer.json()["result"]["message"] == "the job has no failed item to retry"
    answer = call(client, path, jwt_of(seeded), {"job": waiting})
    assert answer.status_code == 422, answer.text
    assert "has not finished" in answer.json()["result"]["message"]
    for answer in (call(client, path, jwt_of(seeded), {"job": "no-such-job"}),
                   call(client, f"/api/p/{other.gid}/jobs/retry", jwt_of(seeded),
                        {"job": clean})):
        assert answer.status_code == 404, answer.text
        assert answer.json()["success"] is False
    assert jobs_count() == before


def test_a_client_selection_cannot_name_a_jobs_failures(client: TestClient,
                                                        seeded: SeedResult) -> None:
    """``{"failures_of": <token>}`` is internal: in a client's selection it is a malformed
    entry (422, 1006) and nothing is queued."""
    token = queue_delete(client, seeded, already_deleted(seeded.projects[0], 2))
    finish(token)
    before = jobs_count()
    answer = call(client, f"/api/p/{seeded.projects[0].gid}/records/bulk/undelete",
                  jwt_of(seeded), {"selection": [{"failures_of": token}]})
    assert answer.status_code == 422, answer.text
    assert answer.json()["result"]["code"] == 1006
    assert jobs_count() == before


def test_jobs_retry_queues_without_holding_a_database_connection(
        client: TestClient, seeded: SeedResult, monkeypatch: pytest.MonkeyPatch) -> None:
    """The request hands its session's connection back before it queues the retry
    (:mod:`tests.api.pool`)."""
    project = seeded.projects[0]
    first = queue_delete(client, seeded, already_deleted(project, 3))
    finish(first)
    with holding_at(monkeypatch, api.unicat.jobs, "queue_submission") as held:
        r = call(client, f"/api/p/{project.gid}/jobs/retry", jwt_of(seeded), {"job": first})
    assert r.status_code == 200, r.text
    assert held == [False]
