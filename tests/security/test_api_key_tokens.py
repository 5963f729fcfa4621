"""A JWT made from a project's API key is bound to that project: 403 on every other project's
routes (in each dialect, and through its renewals) even when the key's user is a member
there too; its ``/sync/get``, ops stats and websocket ``"*"`` cover that project only.  The
same user's password login still opens all their projects."""

from __future__ import annotations

import uuid

import pytest
from fastapi.testclient import TestClient

from models.seed import SeedResult
from tests.security.accounts import claims_of, events_until, queued_jobs, subscribe, synced_jobs
from tests.security.conftest import call, checksum
from tests.security.test_isolation import _fill, project_routes
from tests.stream.conftest import append_job
from tests.stream.threaded import ThreadedServer, open_client


def key_jwt(client: TestClient, seeded: SeedResult, index: int = 0) -> str:
    """The JWT ``/api/p/<project>/auth`` gives for seeded project ``index``'s API key (a key
    of the owner, who is a member of every seeded project)."""
    project = seeded.projects[index]
    r = call(client, f"/api/p/{project.gid}/auth", None, {"api_key": project.api_key})
    assert r.status_code == 200, r.text
    return str(r.headers["authorization"])


def password_jwt(client: TestClient, seeded: SeedResult) -> str:
    owner = seeded.users[0]
    r = call(client, "/api/login", None, {"username": owner.username, "password": owner.password})
    assert r.status_code == 200, r.text
    return str(r.headers["authorization"])


def test_key_jwt_names_its_project_and_key(client: TestClient, seeded: SeedResult):
    """The token carries the project it opens and the key it was made from; a renewal
    keeps both."""
    jwt = key_jwt(client, seeded)
    claims = claims_of(jwt)
    assert claims["prj"] == seeded.projects[0].gid and claims["kid"]
    r = call(client, f"/api/p/{seeded.projects[0].gid}/jobs/list", jwt)
    assert r.status_code == 200
    renewed = claims_of(r.headers["authorization"])
    assert (renewed["prj"], renewed["kid"]) == (claims["prj"], claims["kid"])


@pytest.mark.parametrize("prefix", ["/api/", "/dato/", "/plone/"])
def test_key_jwt_of_a_is_403_on_every_route_of_b(client: TestClient, seeded: SeedResult,
                                                 prefix: str):
    """Each of B's endpoints in each dialect refuses A's key JWT with 403 (the owner is a
    member of B); nothing changes."""
    jwt = key_jwt(client, seeded)
    b = seeded.projects[1]
    routes = [r for r in project_routes(prefix)
              if r[1] not in ("/api/p/{project}/auth", "/api/p/{project}/login")]
    before = checksum()
    for method, template in routes:
        path = _fill(template, seeded).replace(seeded.projects[0].gid, b.gid)
        r = call(client, path, jwt, {}, method=method)
        assert r.status_code == 403, (method, template, r.status_code, r.text)
    assert checksum() == before
    # the control: the owner's password login opens B
    assert call(client, f"/api/p/{b.gid}/jobs/list", password_jwt(client, seeded)).status_code \
        == 200


def test_key_jwt_renewed_on_a_stays_bound(client: TestClient, seeded: SeedResult):
    """A renewal of A's key JWT (from an answer on A) is as bound as the JWT itself."""
    a, b = (p.gid for p in seeded.projects)
    r = call(client, f"/api/p/{a}/records/root", key_jwt(client, seeded))
    assert r.status_code == 200
    renewed = r.headers["authorization"]
    for path in ("records/root", "jobs/list", "init"):
        assert call(client, f"/api/p/{b}/{path}", renewed).status_code == 403, path
    r = call(client, f"/api/p/{b}/records/bulk/delete", renewed,
             {"selection": [seeded.projects[1].heads[0]]})
    assert r.status_code == 403


def test_key_jwt_syncs_and_counts_its_project_only(client: TestClient, seeded: SeedResult):
    """/sync/get carries A's job events only (B's space is 403), the ops stats name A only;
    the owner's password JWT sees both."""
    a_job, b_job = queued_jobs(seeded)
    a, b = (p.gid for p in seeded.projects)
    jwt = key_jwt(client, seeded)
    assert synced_jobs(client, jwt) == {a_job}
    assert synced_jobs(client, password_jwt(client, seeded)) == {a_job, b_job}  # the control
    assert call(client, "/sync/get", jwt, {"cc_cursor": 0, "project": b}).status_code == 403
    assert call(client, "/sync/cursors", jwt, {"project": b}).status_code == 403
    stats = call(client, "/ops/api/stats", jwt, method="GET")
    assert stats.status_code == 200 and set(stats.json()["projects"]) == {a}


# -- the websocket ------------------------------------------------------------------------


@pytest.fixture
def stream(seeded: SeedResult):  # type: ignore[no-untyped-def]
    with ThreadedServer() as srv:
        yield srv


def test_websocket_star_of_a_key_jwt_covers_its_project_only(
        stream: ThreadedServer, client: TestClient, seeded: SeedResult):
    """On the websocket A's key JWT gets 403 for B, and its "*" (snapshot and live events)
    carries A only; the owner's password JWT gets both."""
    a, b = (p.gid for p in seeded.projects)
    a_job, b_job = queued_jobs(seeded)
    ws = open_client(stream.url, key_jwt(client, seeded))
    assert subscribe(ws, b)["code"] == 403
    star = subscribe(ws, "*")
    assert star["op"] == "subscribed" and [j["token"] for j in star["jobs"]] == [a_job]
    append_job(b, str(uuid.uuid4()))
    marker = append_job(a, str(uuid.uuid4()))
    assert {e["data"]["project_gid"] for e in events_until(ws, marker)} == {a}
    ws.close()
    owner = open_client(stream.url, password_jwt(client, seeded))
    star = subscribe(owner, "*")
    assert {j["token"] for j in star["jobs"]} == {a_job, b_job}  # the control
    owner.close()
