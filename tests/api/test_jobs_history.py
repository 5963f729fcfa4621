"""Job history: ``jobs/list`` filters (status, kind, time range, token prefix) and pages through
what they select; a cancelled job is told apart from a failed one (``info.cancelled``);
finished jobs are removed ``JOB_RETENTION_DAYS`` after they ended; and ``jobs/list`` reads a
project's jobs along one index range, whatever the number of jobs."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, insert, select, text, update

from models.engine import get_engine, get_write_engine
from models.jobs import Job
from models.outbox import SyncOutbox
from models.seed import SeededProject, SeedResult
from tests.plans import captured, violations
from tests.security.conftest import call, jwt_of
from worker.tasks import expire_jobs

jobs_t = Job.__table__


def listed(client: TestClient, seeded: SeedResult, project: SeededProject,
           **body: Any) -> list[str]:
    """Tokens of every job ``jobs/list`` lists with ``body``, following ``page.cursor``."""
    tokens: list[str] = []
    cursor = None
    while True:
        answer = call(client, f"/api/p/{project.gid}/jobs/list", jwt_of(seeded),
                      {**body, "page.size": 2, **({"page.cursor": cursor} if cursor else {})})
        assert answer.status_code == 200, answer.text
        result = answer.json()["result"]
        tokens += [j["token"] for j in result["jobs"]]
        cursor = result["page.cursor"]
        if cursor is None:
            return tokens


def queue(client: TestClient, seeded: SeedResult, project: SeededProject, job: str) -> str:
    answer = call(client, f"/api/p/{project.gid}/records/bulk/{job}", jwt_of(seeded),
                  {"selection": [project.heads[0]]})
    assert answer.status_code == 200, answer.text
    return str(answer.json()["result"]["job.token"])


def set_created(token: str, created_on: float) -> None:
    with get_write_engine().begin() as conn:
        conn.execute(update(jobs_t).where(jobs_t.c.token == token)
                     .values(created_on=created_on))


def test_jobs_list_filters_and_pages_through_what_they_select(
    client: TestClient, seeded: SeedResult,
) -> None:
    project = seeded.projects[0]
    deletes = [queue(client, seeded, project, "delete") for _ in range(3)]
    undeletes = [queue(client, seeded, project, "undelete") for _ in range(2)]
    for i, token in enumerate(deletes + undeletes):  # created at t = 1000, 2000, ..., 5000
        set_created(token, 1000.0 * (i + 1))
    newest_first = list(reversed(deletes + undeletes))

    assert listed(client, seeded, project) == newest_first
    assert listed(client, seeded, project, job="bulk_undelete_records") == undeletes[::-1]
    assert listed(client, seeded, project, **{"created.after": 2000, "created.before": 4000}
                  ) == [deletes[2], deletes[1]]
    assert listed(client, seeded, project, job="bulk_delete_records",
                  **{"created.after": 1500}) == [deletes[2], deletes[1]]
    prefix = deletes[1][:8]
    assert listed(client, seeded, project, **{"token.prefix": prefix}) == [
        t for t in newest_first if t.startswith(prefix)]

    cancelled = call(client, f"/api/p/{project.gid}/jobs/cancel", jwt_of(seeded),
                     {"job": deletes[0]})
    assert cancelled.json()["result"]["job"]["info"]["cancelled"] is True
    assert listed(client, seeded, project, status="rejected") == [deletes[0]]
    assert listed(client, seeded, project, status="queued") == newest_first[:-1]
    other = seeded.projects[1]
    assert listed(client, seeded, other) == []  # another project's history is its own


@pytest.mark.parametrize("body", [
    {"status": "bogus"}, {"job": "no_such_job"}, {"token.prefix": "NOT HEX!"},
    {"created.after": "yesterday"}, {"created.before": -1},
])
def test_jobs_list_refuses_a_bad_filter_in_the_envelope(
    client: TestClient, seeded: SeedResult, body: dict[str, Any],
) -> None:
    project = seeded.projects[0]
    answer = call(client, f"/api/p/{project.gid}/jobs/list", jwt_of(seeded), body)
    assert answer.status_code == 400, answer.text
    assert answer.json()["success"] is False


def test_a_cancelled_job_is_told_apart_from_a_failed_one(
    client: TestClient, seeded: SeedResult,
) -> None:
    project = seeded.projects[0]
    token = queue(client, seeded, project, "delete")
    call(client, f"/api/p/{project.gid}/jobs/cancel", jwt_of(seeded), {"job": token})
    job = call(client, f"/api/p/{project.gid}/jobs/get", jwt_of(seeded),
               {"job": token}).json()["result"]["job"]
    assert job["status"] == "rejected"
    assert job["info"]["error"] == "cancelled" and job["info"]["cancelled"] is True


def test_finished_jobs_go_after_the_retention_period(seeded: SeedResult) -> None:
    """Jobs that ended more than JOB_RETENTION_DAYS (30) ago go, with outbox rows naming
    them; recent and unfinished ones stay, however old."""
    project = seeded.projects[0]
    now = time.time()
    rows = {  # token -> (status, finished_on)
        "old-done": ("done", now - 31 * 86_400), "old-rejected": ("rejected", now - 40 * 86_400),
        "recent-done": ("done", now - 29 * 86_400), "old-queued": ("queued", None),
        "old-processing": ("processing", None),
    }
    tokens = {name: str(uuid.uuid4()) for name in rows}
    with get_write_engine().begin() as conn:
        for name, (status, finished) in rows.items():
            conn.execute(insert(jobs_t).values(
                token=tokens[name], project_gid=project.gid, job="bulk_delete_records",
                status=status, info={}, params={}, actor={}, created_on=now - 50 * 86_400,
                updated_on=now - 50 * 86_400, finished_on=finished))
        conn.execute(insert(SyncOutbox.__table__).values(
            job_token=tokens["old-done"], project_gid=project.gid, action="UPDATE",
            data_type="records", gids=project.heads[0], created_on=now))
    assert expire_jobs() == 2
    with get_engine().connect() as conn:
        left = set(conn.execute(select(jobs_t.c.token)).scalars())
        outbox = conn.execute(select(func.count()).select_from(SyncOutbox.__table__)
                              .where(SyncOutbox.__table__.c.job_token == tokens["old-done"])
                              ).scalar_one()
    assert left == {tokens["recent-done"], tokens["old-queued"], tokens["old-processing"]}
    assert outbox == 0


def test_jobs_list_reads_one_index_range_of_a_big_history(
    client: TestClient, seeded: SeedResult,
) -> None:
    """With 30,000 jobs in three projects (the job table analysed), every jobs/list
    statement, filtered or not, reaches the project's jobs through ix_job_project_created,
    in its order: no scan of the job table and no sort of the project's jobs.  (A token
    prefix on PostgreSQL goes through ix_job_token_prefix: one range of the matching tokens,
    sorted.)  The statistics go with the rows afterwards: left behind in the shared test
    database, they would mislead the planner in every later test."""
    now = time.time()
    projects = [p.gid for p in seeded.projects] + [seeded.projects[0].gid]
    kinds = ["bulk_delete_records", "bulk_undelete_records"]
    with get_write_engine().begin() as conn:
        conn.execute(insert(jobs_t), [
            {"token": str(uuid.uuid4()), "project_gid": projects[i % 3], "job": kinds[i % 2],
             "status": ("done", "rejected", "queued")[i % 3], "info": {}, "params": {},
             "actor": {}, "created_on": now - i, "updated_on": now - i,
             "finished_on": now - i} for i in range(30_000)])
    try:
        with get_write_engine().connect() as conn:
            conn.execute(text("ANALYZE job"))
            conn.commit()
        _check_jobs_list_plans(client, seeded, now)
    finally:
        with get_write_engine().begin() as conn:
            conn.execute(text("DELETE FROM job"))
            if conn.dialect.name == "sqlite":
                conn.execute(text("DELETE FROM sqlite_stat1 WHERE tbl = 'job'"))
            else:
                conn.execute(text("ANALYZE job"))


def _check_jobs_list_plans(client: TestClient, seeded: SeedResult, now: float) -> None:
    project = seeded.projects[0]
    bodies: list[dict[str, Any]] = [
        {}, {"status": "done"}, {"job": "bulk_undelete_records"},
        {"created.after": now - 5000, "created.before": now - 100}, {"token.prefix": "ab"},
    ]
    with captured(get_engine()) as cap:
        for body in bodies:
            answer = call(client, f"/api/p/{project.gid}/jobs/list", jwt_of(seeded),
                          {**body, "page.size": 50})
            assert answer.status_code == 200, answer.text
    statements = [(sql, params) for sql, params in cap.statements if "FROM job " in sql]
    assert len(statements) == len(bodies)
    cap.statements = statements
    with get_engine().connect() as conn:
        assert violations(conn, cap, big=frozenset({"job"})) == []
        for sql, params in statements:
            if conn.dialect.name == "postgresql" and "LIKE" in sql:
                plan = str(conn.exec_driver_sql("EXPLAIN " + sql, params).all())
                assert "ix_job_token_prefix" in plan, plan
            elif conn.dialect.name == "postgresql":
                plan = str(conn.exec_driver_sql("EXPLAIN " + sql, params).all())
                assert _project_range(plan) and "Sort" not in plan, plan
            else:
                plan = str(conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql, params).all())
                assert _project_range(plan) and "TEMP B-TREE" not in plan, plan


def _project_range(plan: str) -> bool:
    """The plan reads one range of the project's jobs in the order they were queued: all of
    them (``ix_job_project_created``) or, with a status, those of that status
    (``ix_job_project_status_created``)."""
    return "ix_job_project_created" in plan or "ix_job_project_status_created" in plan
