"""``jobs/pause`` and ``jobs/resume`` over HTTP: a project's owners (and ops) pause and resume
its jobs, other members and strangers get 403 in the Unicat envelope with nothing paused;
the ops API pauses every project, for ops users only; a job queued while paused waits (its
run does not start it), and a paused job is cancelled at once.  The worker side, with real
worker processes, is in ``tests/worker/test_pause.py``."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlmodel import Session

from bulkjobs import tokens
from bulkjobs.connections import get_synclog
from models.accounts import add_member, create_user
from models.engine import get_engine
from models.pauses import EVERY_PROJECT, JobPause
from models.seed import SeedResult
from tests.security.conftest import call, jwt_of
from tests.worker.helpers import cfg, job_row
from worker import runner
from worker.deps import Deps

pytestmark = pytest.mark.services

OWNER, MEMBER, OPS = 0, 1, 2


def pauses() -> set[str]:
    with get_engine().connect() as conn:
        return set(conn.execute(select(JobPause.scope)).scalars())  # type: ignore[call-overload]


def stranger(seeded: SeedResult) -> str:
    """A JWT of an active member of the second project only."""
    with Session(get_engine()) as session:
        user = create_user(session, username="stranger", password="stranger-pw-1")
        add_member(session, user=user, project_gid=seeded.projects[1].gid)
        session.commit()
        return tokens.issue(user.gid)


def queue(client: TestClient, seeded: SeedResult, project: str, gid: str) -> str:
    answer = call(client, f"/api/p/{project}/records/bulk/delete", jwt_of(seeded),
                  {"selection": [gid]})
    assert answer.status_code == 200, answer.text
    return str(answer.json()["result"]["job.token"])


def refused(answer: Any) -> None:
    assert answer.status_code == 403, answer.text
    body = answer.json()
    assert body["success"] is False and body["result"]["code"] == 403


def test_owners_pause_and_resume_their_project_and_a_queued_job_waits(
    client: TestClient, seeded: SeedResult,
) -> None:
    """An owner pauses the project (twice is fine); a job queued meanwhile is not started by
    its run; resume answers with the jobs sent again, and the job then runs to ``done``."""
    project = seeded.projects[0]
    base = f"/api/p/{project.gid}/jobs"
    for _ in range(2):
        answer = call(client, f"{base}/pause", jwt_of(seeded, OWNER))
        assert answer.status_code == 200, answer.text
        assert answer.json()["result"] == {"paused": True}
    assert pauses() == {project.gid}
    token = queue(client, seeded, project.gid, project.heads[0])
    log = get_synclog()
    assert runner.run(token, deps=Deps.default(log), cfg=cfg(), requeue=pytest.fail) == "paused"
    row = job_row(token)
    assert (row.status, row.attempts, row.info) == ("queued", 0, {"paused": True})
    got = call(client, f"/api/p/{project.gid}/jobs/get", jwt_of(seeded), {"job": token})
    assert got.json()["result"]["job"]["info"] == {"paused": True}

    answer = call(client, f"{base}/resume", jwt_of(seeded, OWNER))
    assert answer.status_code == 200, answer.text
    assert answer.json()["result"] == {"paused": False, "resumed": [token]}
    assert pauses() == set()
    assert runner.run(token, deps=Deps.default(log), cfg=cfg(), requeue=pytest.fail) == "done"


def test_members_who_are_not_owners_and_strangers_may_not_pause(
    client: TestClient, seeded: SeedResult,
) -> None:
    """A member without the owner role, a member of another project and a token without
    credentials are refused (403, 403, 401) on both routes; nothing is paused.  An ops user
    may pause any project."""
    project = seeded.projects[0]
    outsider = stranger(seeded)
    for action in ("pause", "resume"):
        path = f"/api/p/{project.gid}/jobs/{action}"
        refused(call(client, path, jwt_of(seeded, MEMBER)))
        refused(call(client, path, outsider))
        assert call(client, path).status_code == 401
    assert pauses() == set()
    answer = call(client, f"/api/p/{project.gid}/jobs/pause", jwt_of(seeded, OPS))
    assert answer.status_code == 200, answer.text
    assert pauses() == {project.gid}


def test_ops_pause_every_project_and_only_ops(client: TestClient, seeded: SeedResult) -> None:
    """``/ops/api/jobs/pause`` pauses every project's jobs, for ops users only (an owner gets
    403); a project's own resume does not lift it (its answer says the jobs are still
    paused); the ops resume does."""
    refused(call(client, "/ops/api/jobs/pause", jwt_of(seeded, OWNER)))
    assert pauses() == set()
    answer = call(client, "/ops/api/jobs/pause", jwt_of(seeded, OPS))
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"paused": True, "resumed": []}
    assert pauses() == {EVERY_PROJECT}
    project = seeded.projects[0]
    answer = call(client, f"/api/p/{project.gid}/jobs/resume", jwt_of(seeded, OWNER))
    assert answer.json()["result"] == {"paused": True, "resumed": []}
    refused(call(client, "/ops/api/jobs/resume", jwt_of(seeded, OWNER)))
    answer = call(client, "/ops/api/jobs/resume", jwt_of(seeded, OPS))
    assert answer.status_code == 200, answer.text
    assert answer.json()["paused"] is False
    assert pauses() == set()


def test_cancelling_a_job_held_by_a_pause_rejects_it_at_once(
    client: TestClient, seeded: SeedResult,
) -> None:
    """``jobs/cancel`` of a job held by a pause answers it ``rejected`` with
    ``info.cancelled`` (no ``paused`` left in its info), the project still paused."""
    project = seeded.projects[0]
    call(client, f"/api/p/{project.gid}/jobs/pause", jwt_of(seeded, OWNER))
    token = queue(client, seeded, project.gid, project.heads[0])
    log = get_synclog()
    assert runner.run(token, deps=Deps.default(log), cfg=cfg(), requeue=pytest.fail) == "paused"
    answer = call(client, f"/api/p/{project.gid}/jobs/cancel", jwt_of(seeded), {"job": token})
    assert answer.status_code == 200, answer.text
    job = answer.json()["result"]["job"]
    assert job["status"] == "rejected"
    assert job["info"] == {"error": "cancelled", "cancelled": True}
    assert pauses() == {project.gid}
