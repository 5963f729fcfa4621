"""Authority comes from the database on every request, not from the token: a user whose
``ops`` flag was taken away keeps no ops access through an older JWT (other projects'
``jobs/list`` and bulk routes 403, ``/sync/get`` and the ops stats show their own projects
only, the renewed JWT says ``ops: false``), and a deleted user's JWT is a 401 — over HTTP and
on the websocket alike."""

from __future__ import annotations

import json
import uuid

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session

from models.auth import Member
from models.engine import get_engine
from models.seed import SeedResult
from tests.security.accounts import (
    claims_of,
    close_code,
    delete_user,
    events_until,
    queued_jobs,
    refused,
    revoked_projects,
    set_user,
    subscribe,
    synced_jobs,
)
from tests.security.conftest import call, jwt_of
from tests.stream.conftest import append_job
from tests.stream.threaded import ThreadedServer, open_client

OPS = 2  # the seeded ops user: a member of no project


def _stats_projects(client: TestClient, jwt: str) -> set[str]:
    r = call(client, "/ops/api/stats", jwt, method="GET")
    assert r.status_code == 200, r.text
    return set(r.json()["projects"])


def test_ops_flag_taken_away_ends_ops_access_over_http(client: TestClient, seeded: SeedResult):
    """With the ops flag cleared in the database, the ops user's unexpired JWT opens no
    project of which they are no member: jobs/list and a bulk route 403 (nothing queued),
    /sync/get and the ops stats show nothing of them, and the renewed JWT says ops false."""
    a, b = (p.gid for p in seeded.projects)
    jobs = queued_jobs(seeded)
    jwt = jwt_of(seeded, OPS)
    assert call(client, f"/api/p/{a}/jobs/list", jwt).status_code == 200  # the control
    assert synced_jobs(client, jwt) >= set(jobs)
    assert _stats_projects(client, jwt) == {a, b}

    set_user(seeded.users[OPS].gid, ops=False)
    for project in seeded.projects:
        r = call(client, f"/api/p/{project.gid}/jobs/list", jwt)
        assert r.status_code == 403, r.text
        r = call(client, f"/api/p/{project.gid}/records/bulk/delete", jwt,
                 {"selection": [project.heads[1]]})
        assert r.status_code == 403, r.text
    assert synced_jobs(client, jwt) == set()
    r = call(client, "/ops/api/stats", jwt, method="GET")
    assert r.status_code == 200 and r.json()["projects"] == {}
    renewed = r.headers["authorization"]
    assert claims_of(renewed)["ops"] is False
    assert call(client, f"/api/p/{a}/jobs/list", renewed).status_code == 403


def test_ops_flag_given_back_counts_at_once(client: TestClient, seeded: SeedResult):
    """The flag is read, not remembered: a member's JWT issued without ops opens every
    project once the flag is set, and the renewed JWT says so."""
    member = seeded.users[1]
    stranger_project = seeded.projects[0].gid
    set_user(member.gid, ops=False)
    jwt = jwt_of(seeded, 1)
    set_user(member.gid, ops=True)
    r = call(client, f"/api/p/{stranger_project}/jobs/list", jwt)
    assert r.status_code == 200 and claims_of(r.headers["authorization"])["ops"] is True


@pytest.mark.parametrize("index", [0, OPS], ids=["member", "ops"])
def test_deleted_users_jwt_is_401(client: TestClient, seeded: SeedResult, index: int):
    """Once the user row is gone, their unexpired JWT is a 401 with WWW-Authenticate on a
    project route, a bulk route, /sync/get, the ops stats and the user's own init."""
    a = seeded.projects[0]
    jwt = jwt_of(seeded, index)
    assert call(client, f"/api/p/{a.gid}/jobs/list", jwt).status_code == 200  # the control
    delete_user(seeded.users[index].gid)
    answers = [
        call(client, f"/api/p/{a.gid}/jobs/list", jwt),
        call(client, f"/api/p/{a.gid}/records/bulk/delete", jwt, {"selection": [a.heads[0]]}),
        call(client, "/sync/get", jwt, {"cc_cursor": 0}),
        call(client, "/sync/cursors", jwt),
        call(client, "/api/init", jwt),
        call(client, "/ops/api/stats", jwt, method="GET"),
    ]
    for r in answers:
        assert refused(r), (r.request.url, r.status_code, r.text)


# -- the websocket ------------------------------------------------------------------------


@pytest.fixture
def stream(seeded: SeedResult):  # type: ignore[no-untyped-def]
    """A real stream server over the seeded database (membership refresh every 0.5 s)."""
    with ThreadedServer() as srv:
        yield srv


def test_websocket_star_of_an_ops_user_narrows_when_the_flag_goes(
        stream: ThreadedServer, seeded: SeedResult):
    """An ops user's "*" carries every project's events; once the flag is cleared it is
    narrowed to the projects they are a member of (B here), A is announced as revoked, and
    A's events stop."""
    a, b = (p.gid for p in seeded.projects)
    ops_user = seeded.users[OPS]
    with Session(get_engine()) as session:
        session.add(Member(project_gid=b, user_gid=ops_user.gid))
        session.commit()
    ws = open_client(stream.url, jwt_of(seeded, OPS))
    assert subscribe(ws, "*")["op"] == "subscribed"
    before = events_until(ws, append_job(a, str(uuid.uuid4())))
    assert a in {e["data"]["project_gid"] for e in before}  # the control
    set_user(ops_user.gid, ops=False)
    assert revoked_projects(ws, 1) == {a}
    append_job(a, str(uuid.uuid4()))
    marker = append_job(b, str(uuid.uuid4()))
    after = events_until(ws, marker)
    assert {e["data"]["project_gid"] for e in after} == {b}, after
    assert subscribe(ws, a)["code"] == 403
    ws.close()


def test_websocket_of_a_deleted_user_is_closed_4001(stream: ThreadedServer, seeded: SeedResult):
    """An open connection of a user whose row is deleted is closed with 4001 at the next
    refresh, and the JWT no longer authenticates a new one."""
    jwt = jwt_of(seeded, OPS)
    ws = open_client(stream.url, jwt)
    assert subscribe(ws, "*")["op"] == "subscribed"
    delete_user(seeded.users[OPS].gid)
    assert close_code(ws) == 4001
    again = open_client(stream.url, None)
    again.send(json.dumps({"op": "auth", "jwt": jwt}))
    assert close_code(again) == 4001
