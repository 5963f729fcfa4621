"""The Unicat dialect over HTTP (in-process ASGI client, real database and Redis): the
envelope, error codes, JWT behaviour, reads, job endpoints and sync."""

from __future__ import annotations

import time
from typing import Any

import jwt as pyjwt
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, text

from bulkjobs import keys
from bulkjobs.connections import get_synclog
from bulkjobs.settings import get_settings
from bulkjobs.tokens import issue
from models import Job, User
from models.engine import get_engine, get_write_engine
from models.seed import SeedResult

REALM = 'Bearer realm="JWT access to bulkjobs."'


def auth(client: TestClient, seeded: SeedResult, index: int = 0) -> tuple[str, str]:
    project = seeded.projects[index]
    r = client.post(f"/api/p/{project.gid}/auth", json={"api_key": project.api_key})
    assert r.status_code == 200, r.text
    return project.gid, r.headers["authorization"]


def post(client: TestClient, path: str, jwt: str | None, body: Any = None):  # type: ignore[no-untyped-def]
    headers = {"Authorization": f"Bearer {jwt}"} if jwt else {}
    return client.post(path, json=body if body is not None else {}, headers=headers)


def jobs_count() -> int:
    with get_engine().connect() as conn:
        return int(conn.execute(select(func.count()).select_from(Job)).scalar_one())


def test_auth_with_api_key_answers_jwt_and_init_data(client: TestClient, seeded: SeedResult):
    """`auth` puts a bare JWT in Authorization and init data in the envelope."""
    project = seeded.projects[0]
    r = client.post(f"/api/p/{project.gid}/auth", json={"api_key": project.api_key})
    body = r.json()
    assert r.status_code == 200 and body["success"] is True
    assert not r.headers["authorization"].startswith("Bearer")
    assert body["result"]["project"] == project.gid
    assert body["result"]["user"] == seeded.users[0].gid
    assert isinstance(body["result"]["cc.cursor"], int)
    assert isinstance(body["result"]["cursor"], int)
    assert set(body["data"]) <= {
        "cc.users", "cc.projects", "cc.projects_members", "cc.languages", "records",
        "definitions", "classes", "fields", "layouts", "assets", "queries", "modules",
    }
    assert isinstance(body["data"]["cc.projects_members"], list)
    assert len(body["data"]["definitions"]) == 3


@pytest.mark.parametrize("key", ["wrong", "", "x" * 150])
def test_bad_api_key_is_401_with_www_authenticate(client: TestClient, seeded: SeedResult, key):
    """A wrong API key answers 401 in the envelope with the WWW-Authenticate realm."""
    r = client.post(f"/api/p/{seeded.projects[0].gid}/auth", json={"api_key": key})
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == REALM
    assert r.json() == {"success": False, "result": {"code": 401, "message": "Invalid API key",
                                                     "info": {}}, "data": {}}


def test_api_key_of_another_project_is_rejected(client: TestClient, seeded: SeedResult):
    """An API key only opens its own project."""
    r = client.post(f"/api/p/{seeded.projects[1].gid}/auth",
                    json={"api_key": seeded.projects[0].api_key})
    assert r.status_code == 401


def test_login_with_password(client: TestClient, seeded: SeedResult):
    """`login` takes username and password; a wrong password is 401."""
    user, project = seeded.users[1], seeded.projects[0]
    ok = client.post(f"/api/p/{project.gid}/login",
                     json={"username": user.username, "password": user.password})
    assert ok.status_code == 200 and ok.json()["result"]["user"] == user.gid
    bad = client.post(f"/api/p/{project.gid}/login",
                      json={"username": user.username, "password": "nope"})
    assert bad.status_code == 401 and bad.json()["result"]["code"] == 401


def test_every_success_renews_the_jwt(client: TestClient, seeded: SeedResult):
    """Each successful response carries a fresh, valid JWT in Authorization."""
    project, jwt = auth(client, seeded)
    r = post(client, f"/api/p/{project}/records/root", jwt)
    assert r.status_code == 200
    renewed = r.headers["authorization"]
    claims = pyjwt.decode(renewed, get_settings().effective_jwt_secret, algorithms=["HS256"])
    assert claims["sub"] == seeded.users[0].gid
    assert post(client, f"/api/p/{project}/records/root", renewed).status_code == 200


def _forged(user: str) -> dict[str, str]:
    now = int(time.time())
    payload = {"sub": user, "iat": now, "exp": now + 600}
    return {
        "wrong secret": pyjwt.encode(payload, "not-the-secret", algorithm="HS256"),
        "expired": pyjwt.encode({**payload, "exp": now - 10}, get_settings().effective_jwt_secret,
                                algorithm="HS256"),
        "alg none": pyjwt.encode(payload, None, algorithm="none"),  # type: ignore[arg-type]
        "garbage": "a.b.c",
    }


@pytest.mark.parametrize("kind", ["wrong secret", "expired", "alg none", "garbage", "missing"])
def test_bad_jwts_are_401(client: TestClient, seeded: SeedResult, kind: str):
    """Forged, expired, alg-none, garbage and missing JWTs are all 401 with the realm."""
    token = None if kind == "missing" else _forged(seeded.users[0].gid)[kind]
    r = post(client, f"/api/p/{seeded.projects[0].gid}/records/root", token)
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == REALM
    assert r.json()["success"] is False and r.json()["result"]["code"] == 401
    assert "authorization" not in r.headers


def test_non_member_is_403(client: TestClient, seeded: SeedResult):
    """A valid user who is not a member gets 403, and learns nothing of the project."""
    with get_write_engine().begin() as conn:
        conn.execute(User.__table__.insert().values(gid="a0000000-0000-4000-8000-000000000001",
                                                    username="stranger", name="", ops=False,
                                                    password_hash=""))
    jwt = issue("a0000000-0000-4000-8000-000000000001")
    for path in ("records/root", "jobs/list"):
        r = post(client, f"/api/p/{seeded.projects[0].gid}/{path}", jwt)
        assert r.status_code == 403 and r.json()["result"]["code"] == 403
    r = post(client, f"/api/p/{seeded.projects[0].gid}/records/bulk/delete", jwt,
             {"selection": [seeded.projects[0].root]})
    assert r.status_code == 403 and jobs_count() == 0


def test_records_root_get_children(client: TestClient, seeded: SeedResult):
    """Record reads answer gids in `result` and records in `data.records`, Unicat-shaped."""
    project, jwt = auth(client, seeded)
    root = post(client, f"/api/p/{project}/records/root", jwt).json()
    assert root["result"]["root"] == seeded.projects[0].root
    rec = root["data"]["records"][root["result"]["root"]]
    assert rec["parent"] is None and rec["path"] == [rec["gid"]] and rec["treelevel"] == 0
    assert "__all__" in rec["channels"]
    kids = post(client, f"/api/p/{project}/records/children", jwt,
                {"record": seeded.projects[0].root, "page.size": 4}).json()["result"]
    assert kids["children.size"] == 9 and len(kids["children"]) == 4  # the tenth is deleted
    head = seeded.projects[0].heads[0]
    got = post(client, f"/api/p/{project}/records/get", jwt, {"record": head}).json()
    record = got["data"]["records"][head]
    assert record["path"] == [head, seeded.projects[0].root]
    assert record["childcount"] == 9 and record["title"]["en"] and record["title"]["nl"]
    many = post(client, f"/api/p/{project}/records/get", jwt,
                {"records": [head, "unknown", seeded.projects[1].root]}).json()
    assert many["result"]["records"] == [head]
    missing = post(client, f"/api/p/{project}/records/get", jwt, {"record": "unknown"})
    assert missing.status_code == 422 and missing.json()["result"]["code"] == 422


def test_bulk_job_answers_token_and_announces_it(client: TestClient, seeded: SeedResult):
    """A bulk endpoint answers a job token at once and appends the INSERT queued event."""
    project, jwt = auth(client, seeded)
    before = get_synclog().cursor(keys.CC_SPACE)
    r = post(client, f"/api/p/{project}/records/bulk/delete", jwt,
             {"selection": [seeded.projects[0].heads[0]]})
    body = r.json()
    assert r.status_code == 200 and body["data"] == {}
    token = body["result"]["job.token"]
    page = get_synclog().read(keys.CC_SPACE, before)
    assert [e.as_dict()["data_key"] for e in page.events] == [token]
    first = page.events[0].as_dict()
    assert first["action"] == "INSERT" and first["data"]["status"] == "queued"
    job = post(client, f"/api/p/{project}/jobs/get", jwt, {"job": token}).json()["result"]["job"]
    assert job["token"] == token and job["status"] == "queued"
    assert job["job"] == "bulk_delete_records"


@pytest.mark.parametrize("selection, entry", [
    ("not a list", None),
    ([1], 0),
    (["ok", {"children": "x", "bogus": 1}], 1),
    ([{"search": {"q": "x"}}], 0),  # no language
    ([{"nothing": 1}], 0),
])
def test_malformed_selection_is_1006_and_queues_nothing(client: TestClient, seeded: SeedResult,
                                                         selection, entry):
    """A malformed selection answers 422/1006 naming the entry, and nothing is queued."""
    project, jwt = auth(client, seeded)
    before = get_synclog().cursor(keys.CC_SPACE)
    r = post(client, f"/api/p/{project}/records/bulk/undelete", jwt, {"selection": selection})
    body = r.json()
    assert r.status_code == 422 and body["success"] is False
    assert body["result"]["code"] == 1006
    assert body["result"]["info"].get("entry") == entry
    assert body["result"]["info"]["reason"]
    assert jobs_count() == 0
    assert get_synclog().cursor(keys.CC_SPACE) == before


def test_missing_parameters_are_400(client: TestClient, seeded: SeedResult):
    """Missing or mistyped parameters answer 400 in the envelope, not FastAPI's 422."""
    project, jwt = auth(client, seeded)
    r = post(client, f"/api/p/{project}/records/bulk/delete", jwt, {})
    assert r.status_code == 400 and r.json()["result"]["code"] == 400
    r = client.post(f"/api/p/{project}/records/get", content=b"{not json",
                    headers={"Authorization": f"Bearer {jwt}",
                             "content-type": "application/json"})
    assert r.status_code == 400 and r.json()["success"] is False
    assert jobs_count() == 0


def test_unknown_route_is_404_envelope(client: TestClient):
    """Unknown routes answer the envelope, not a bare error page."""
    r = client.post("/api/p/x/records/nonsense", json={})
    assert r.status_code == 404 and r.json()["result"]["code"] == 404


def test_body_over_10_mb_is_413(client: TestClient, seeded: SeedResult):
    """Request bodies over 10 MB answer 413 before they are parsed."""
    project, jwt = auth(client, seeded)
    big = b'{"selection": ["' + b"x" * (10 * 1024 * 1024 + 10) + b'"]}'
    r = client.post(f"/api/p/{project}/records/bulk/delete", content=big,
                    headers={"Authorization": f"Bearer {jwt}",
                             "content-type": "application/json"})
    assert r.status_code == 413 and r.json()["result"]["code"] == 413
    assert jobs_count() == 0


def test_sync_cursors_and_get(client: TestClient, seeded: SeedResult):
    """`/sync/cursors` gives the cc cursor; `/sync/get` returns later events of visible
    projects only, in order: for a JWT made from an API key, of that key's project only."""
    project, jwt = auth(client, seeded)
    cursor = post(client, "/sync/cursors", jwt).json()["result"]["cc.cursor"]
    mine = post(client, f"/api/p/{project}/records/bulk/delete", jwt,
                {"selection": [seeded.projects[0].heads[0]]}).json()["result"]["job.token"]
    other, other_jwt = auth(client, seeded, 1)  # the same user is a member of both projects
    theirs = post(client, f"/api/p/{other}/records/bulk/delete", other_jwt,
                  {"selection": [seeded.projects[1].heads[0]]}).json()["result"]["job.token"]
    from bulkjobs.synclog import job_event

    get_synclog().append(keys.CC_SPACE, [job_event(  # a project this user is no member of
        token="hidden", project="b0000000-0000-4000-8000-000000000002", job="x",
        status="queued", info={}, created_on=0.0, updated_on=0.0, insert=True)])
    got = post(client, "/sync/get", jwt, {"cc_cursor": cursor}).json()["result"]
    assert "warning" not in got
    tokens = [e["data_key"] for e in got["sync"]]
    assert tokens == [mine]
    assert got["cc.cursor"] == get_synclog().cursor(keys.CC_SPACE)
    logged_in = client.post("/api/login", json={
        "username": seeded.users[0].username, "password": seeded.users[0].password})
    got = post(client, "/sync/get", logged_in.headers["authorization"],
               {"cc_cursor": cursor}).json()["result"]
    assert [e["data_key"] for e in got["sync"]] == [mine, theirs]
    assert [e["cursor"] for e in got["sync"]] == sorted(e["cursor"] for e in got["sync"])


def test_sync_get_below_floor_says_not_recovered(client: TestClient, seeded: SeedResult):
    """A cursor below the floor answers the oldest events with a warning and
    recovered: false."""
    project, jwt = auth(client, seeded)
    post(client, f"/api/p/{project}/records/bulk/delete", jwt,
         {"selection": [seeded.projects[0].heads[0]]})
    got = post(client, "/sync/get", jwt, {"cc_cursor": 1}).json()["result"]
    assert got["recovered"] is False and "warning" in got
    assert got["sync"] and got["sync"][0]["data"]["status"] == "queued"


def test_sync_get_pages_with_warning(client: TestClient, seeded: SeedResult):
    """More than one page of events answers 1,000 events and a warning."""
    from bulkjobs.synclog import job_event

    project, jwt = auth(client, seeded)
    log = get_synclog()
    start = log.cursor(keys.CC_SPACE)
    events = [job_event(token=f"t{i}", project=project, job="bulk_delete_records",
                        status="processing", info={"total": 1, "remaining": 1},
                        created_on=0.0, updated_on=0.0) for i in range(1001)]
    log.append(keys.CC_SPACE, events)
    first = post(client, "/sync/get", jwt, {"cc_cursor": start}).json()["result"]
    assert len(first["sync"]) == 1000 and "warning" in first
    rest = post(client, "/sync/get", jwt,
                {"cc_cursor": first["sync"][-1]["cursor"]}).json()["result"]
    assert len(rest["sync"]) == 1 and "warning" not in rest


def test_sync_get_pages_a_project_through_packed_entries(client: TestClient,
                                                         seeded: SeedResult):
    """A batch's record events are packed entries in the log; `/sync/get` pages them by
    events (at most 1,000 a page), a page may end inside a packed entry, and following the
    last cursor yields every event once, in order, shaped as single events are."""
    project, jwt = auth(client, seeded)
    log = get_synclog()
    gids = [f"g{i}" for i in range(2500)]
    cursors = list(log.append_records(project, [("records", "DELETE", gids)]))
    cc = log.cursor(keys.CC_SPACE)
    after = cursors[233]  # inside the first packed entry
    pages = []
    while True:
        got = post(client, "/sync/get", jwt,
                   {"cc_cursor": cc, "project": project, "cursor": after}).json()["result"]
        pages.append(got["sync"])
        if "warning" not in got:
            break
        after = got["sync"][-1]["cursor"]
    assert [len(p) for p in pages] == [1000, 1000, 266]
    assert [e for p in pages for e in p] == [
        {"type": project, "cursor": c, "action": "DELETE", "data_type": "records",
         "data_key": g} for c, g in zip(cursors[234:], gids[234:], strict=True)]


def test_healthz(client: TestClient, services):
    """`/healthz` checks the database and Redis."""
    r = client.get("/healthz")
    assert r.status_code == 200 and r.json()["checks"] == {"database": "ok", "redis": "ok"}


def test_jobs_list_pages_newest_first(client: TestClient, seeded: SeedResult):
    """`jobs/list` pages with page.cursor, newest first, until the cursor is null."""
    project, jwt = auth(client, seeded)
    tokens = [post(client, f"/api/p/{project}/records/bulk/delete", jwt,
                   {"selection": [h]}).json()["result"]["job.token"]
              for h in seeded.projects[0].heads[:3]]
    page = post(client, f"/api/p/{project}/jobs/list", jwt, {"page.size": 2}).json()["result"]
    assert [j["token"] for j in page["jobs"]] == tokens[::-1][:2]
    rest = post(client, f"/api/p/{project}/jobs/list", jwt,
                {"page.size": 2, "page.cursor": page["page.cursor"]}).json()["result"]
    assert [j["token"] for j in rest["jobs"]] == [tokens[0]] and rest["page.cursor"] is None
    bad = post(client, f"/api/p/{project}/jobs/list", jwt, {"page.cursor": "%%%"})
    assert bad.status_code == 400


def test_cancel_queued_job_rejects_it(client: TestClient, seeded: SeedResult):
    """Cancelling a job no worker has started ends it `rejected` with error "cancelled"."""
    project, jwt = auth(client, seeded)
    token = post(client, f"/api/p/{project}/records/bulk/delete", jwt,
                 {"selection": [seeded.projects[0].heads[0]]}).json()["result"]["job.token"]
    r = post(client, f"/api/p/{project}/jobs/cancel", jwt, {"job": token}).json()["result"]
    assert r["job"]["status"] == "rejected" and r["job"]["info"]["error"] == "cancelled"
    with get_engine().connect() as conn:
        assert conn.execute(text("SELECT status FROM job WHERE token = :t"),
                            {"t": token}).scalar_one() == "rejected"
    missing = post(client, f"/api/p/{project}/jobs/cancel", jwt, {"job": "nope"})
    assert missing.status_code == 404
