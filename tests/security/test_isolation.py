"""Tenant isolation: a user who is not a member of project A — here the *outsider*, an active
member of project B only — gets 403 on every one of A's endpoints in every dialect, and never
sees A's records, jobs or events by way of B: not through gids, selections, searches, job
tokens, the sync log over HTTP, the ops stats, nor the websocket (snapshots included)."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from api.app import app
from bulkjobs.connections import get_synclog
from models import Record
from models.engine import get_engine
from models.seed import SeedResult
from tests.security.conftest import Outsider, call, checksum, finish, jwt_of
from tests.stream.conftest import append_job
from tests.stream.threaded import ThreadedServer, open_client, reply_or_close
from tests.worker.helpers import cfg, new_job, run_to_end


def project_routes(prefix: str) -> list[tuple[str, str]]:
    """``(method, path template)`` of every route under ``prefix`` with a ``{project}``
    parameter, from the OpenAPI document (so routes added later are covered too)."""
    out = []
    for path, operations in app.openapi()["paths"].items():
        if path.startswith(prefix) and "{project}" in path:
            out += [(method.upper(), path) for method in operations]
    return sorted(out)


#: Endpoints that authenticate by credentials in the body, not as a member.
CREDENTIAL_ENDPOINTS = {"/api/p/{project}/auth", "/api/p/{project}/login"}


def _fill(template: str, seeded: SeedResult) -> str:
    a = seeded.projects[0]
    return (template.replace("{project}", a.gid).replace("{item_id}", a.root)
            .replace("{record}", a.root).replace("{version_id}", "AAAAAAAAAAAAAAAAAAAAAA")
            .replace("{job_id}", str(uuid.uuid4())).replace("{version}", "0"))


def records_of(project: str) -> set[str]:
    with get_engine().connect() as conn:
        return set(conn.execute(select(Record.gid).where(Record.project_gid == project))
                   .scalars())


def a_job(seeded: SeedResult) -> str:
    """A finished job of project A (a bulk delete of one record), run in-process."""
    token = new_job(get_synclog(), seeded.projects[0], "bulk_delete_records",
                    [seeded.projects[0].heads[0]])
    run_to_end(token, get_synclog(), cfg())
    return token


@pytest.mark.parametrize("prefix", ["/api/", "/dato/", "/plone/"])
def test_every_endpoint_of_another_project_is_403(client: TestClient, seeded: SeedResult,
                                                  outsider: Outsider, prefix: str):
    """Each of A's endpoints in each dialect refuses the outsider's JWT with 403 (and, where
    the dialect takes API keys, the outsider's API key of B too); nothing changes."""
    routes = [r for r in project_routes(prefix) if r[1] not in CREDENTIAL_ENDPOINTS]
    assert routes, f"no routes under {prefix}"
    before = checksum()
    for method, template in routes:
        path = _fill(template, seeded)
        r = call(client, path, outsider.jwt, {}, method=method)
        assert r.status_code == 403, (method, template, r.status_code, r.text)
        if prefix != "/api/":  # DatoCMS and Plone clients send API keys as bearer tokens
            r = call(client, path, outsider.api_key, {}, method=method)
            assert r.status_code in (401, 403), (method, template, r.status_code, r.text)
    assert checksum() == before


def test_login_into_another_project_is_refused(client: TestClient, seeded: SeedResult,
                                               outsider: Outsider):
    """Right password, wrong project: no JWT and no init data of A."""
    r = call(client, f"/api/p/{seeded.projects[0].gid}/login", None,
             {"username": outsider.username, "password": outsider.password})
    assert r.status_code in (401, 403), r.text
    assert "authorization" not in r.headers
    assert seeded.projects[0].gid not in r.text


def test_gids_of_another_project_are_invisible_through_own_project(
        client: TestClient, seeded: SeedResult, outsider: Outsider):
    """Asking B's endpoints for A's records (by gid, children, bulk/get) finds nothing."""
    a, b = seeded.projects
    a_gids = sorted(records_of(a.gid))[:50] + [a.root, *a.heads]
    base = f"/api/p/{b.gid}"
    answers = [
        call(client, f"{base}/records/get", outsider.jwt, {"records": a_gids}),
        call(client, f"{base}/records/get", outsider.jwt, {"record": a.root}),
        call(client, f"{base}/records/children", outsider.jwt, {"record": a.root}),
        call(client, f"{base}/records/bulk/get", outsider.jwt,
             {"selection": [*a_gids, {"children": a.root}, {"children": a.heads[0]}]}),
    ]
    for r in answers:
        assert r.status_code < 500, r.text
        body = r.json()
        # An error may echo the gid that was asked for; an answer never carries A's records.
        shown = json.dumps(body["data"]) + (json.dumps(body["result"]) if body["success"] else "")
        for gid in a_gids:
            assert gid not in shown, (r.request.url, gid)
    bulk = answers[-1].json()["result"]
    assert bulk["records.size"] == 0


def test_search_through_own_project_never_finds_another_projects_records(
        client: TestClient, seeded: SeedResult, outsider: Outsider):
    """A search in B for words that A's records hold answers B's records only."""
    a, b = seeded.projects
    a_gids, b_gids = records_of(a.gid), records_of(b.gid)
    for q in ("apple", "lighthouse", "garden river", "a"):
        r = call(client, f"/api/p/{b.gid}/records/search", outsider.jwt,
                 {"language": "en", "q": q, "page.size": 1000})
        assert r.status_code == 200, r.text
        found = set(r.json()["data"].get("records", {}))
        assert found <= b_gids and not found & a_gids, q


def test_bulk_job_in_own_project_never_touches_another_projects_records(
        client: TestClient, seeded: SeedResult, outsider: Outsider):
    """A bulk delete queued in B over A's gids and subtrees resolves to nothing and changes
    nothing of A's, even once it has run."""
    a, b = seeded.projects
    before = checksum()
    r = call(client, f"/api/p/{b.gid}/records/bulk/delete", outsider.jwt,
             {"selection": [a.root, *a.heads, {"children": a.root},
                            {"search": {"language": "en", "filter": ["ancestor", "is", a.root]}}]})
    assert r.status_code == 200, r.text
    job = finish(r.json()["result"]["job.token"])
    assert job["status"] == "done" and job["info"]["total"] == 0, job
    assert checksum() == before


def test_jobs_of_another_project_cannot_be_read_listed_or_cancelled(
        client: TestClient, seeded: SeedResult, outsider: Outsider):
    """A's job token is unknown through B: get and cancel are 404, the list never shows it."""
    token = a_job(seeded)
    base = f"/api/p/{seeded.projects[1].gid}"
    for endpoint in ("jobs/get", "jobs/cancel"):
        r = call(client, f"{base}/{endpoint}", outsider.jwt, {"job": token})
        assert r.status_code == 404, (endpoint, r.text)
    r = call(client, f"{base}/jobs/list", outsider.jwt, {"page.size": 1000})
    assert r.status_code == 200 and token not in r.text
    for path in (f"/dato/p/{seeded.projects[1].gid}/job-results/{token}",):
        r = call(client, path, outsider.jwt, method="GET")
        assert r.status_code == 404 and seeded.projects[0].gid not in r.text


def test_sync_log_over_http_never_carries_another_projects_events(
        client: TestClient, seeded: SeedResult, outsider: Outsider):
    """/sync/get skips A's job events for the outsider and refuses A's own space (403)."""
    token = a_job(seeded)
    a = seeded.projects[0].gid
    r = call(client, "/sync/get", outsider.jwt, {"cc_cursor": 0})
    assert r.status_code == 200
    assert token not in r.text and a not in r.text
    owner = call(client, "/sync/get", jwt_of(seeded), {"cc_cursor": 0})
    assert token in owner.text  # the control: the event is there for a member
    for body in ({"cc_cursor": 0, "project": a}, {"cc_cursor": 0, "project": a, "cursor": 0}):
        assert call(client, "/sync/get", outsider.jwt, body).status_code == 403
    assert call(client, "/sync/cursors", outsider.jwt, {"project": a}).status_code == 403


def test_init_and_ops_stats_show_own_projects_only(client: TestClient, seeded: SeedResult,
                                                   outsider: Outsider):
    """B's init data and the ops stats of a non-ops user mention nothing of A."""
    a_job(seeded)
    a = seeded.projects[0].gid
    init = call(client, f"/api/p/{seeded.projects[1].gid}/init", outsider.jwt)
    assert init.status_code == 200 and a not in init.text
    stats = call(client, "/ops/api/stats", outsider.jwt, method="GET")
    assert stats.status_code == 200 and a not in stats.text
    assert "bulk_delete_records" not in json.dumps(stats.json().get("jobs", {}))


# -- the websocket ------------------------------------------------------------------------


@pytest.fixture
def stream(seeded: SeedResult):  # type: ignore[no-untyped-def]
    """A real stream server over the seeded database."""
    with ThreadedServer() as srv:
        yield srv


def _events_until(ws: Any, cursor: int) -> list[dict[str, Any]]:
    """Every event received up to and including ``cursor`` (which must arrive)."""
    out: list[dict[str, Any]] = []
    while not out or out[-1]["cursor"] < cursor:
        msg = json.loads(ws.recv(timeout=10))
        assert msg["op"] == "sync", msg
        out.extend(msg["sync"])
    return out


def test_websocket_outsider_is_403_on_a_and_never_gets_its_events(
        stream: ThreadedServer, seeded: SeedResult, outsider: Outsider):
    """Subscribing to A is a 403; "*" and B — even with A's job tokens as a filter — carry
    none of A's events, and the snapshot holds none of A's jobs."""
    a, b = seeded.projects[0].gid, seeded.projects[1].gid
    token = a_job(seeded)
    ws = open_client(stream.url, outsider.jwt)
    ws.send(json.dumps({"op": "subscribe", "project": a}))
    refused = reply_or_close(ws)
    assert isinstance(refused, dict) and refused["code"] == 403
    ws.send(json.dumps({"op": "subscribe", "project": "*", "cc_cursor": 0}))
    star = reply_or_close(ws)
    assert isinstance(star, dict) and star["op"] == "subscribed", star
    assert all(j["project_gid"] == b for j in star["jobs"])
    ws.send(json.dumps({"op": "subscribe", "project": b, "jobs": [token]}))
    filtered = reply_or_close(ws)
    assert isinstance(filtered, dict) and filtered["jobs"] == [], filtered
    append_job(a, str(uuid.uuid4()))
    append_job(a, token)
    marker = append_job(b, str(uuid.uuid4()))
    got = _events_until(ws, marker)
    assert got and all(e["data"]["project_gid"] == b for e in got), got
    assert token not in json.dumps(got)
    ws.close()


def test_websocket_outsider_cannot_resubscribe_after_a_403(
        stream: ThreadedServer, seeded: SeedResult, outsider: Outsider):
    """Repeated or reworded subscriptions to A (other cursors, jobs, re-auth) stay 403."""
    a = seeded.projects[0].gid
    ws = open_client(stream.url, outsider.jwt)
    for extra in ({}, {"cc_cursor": 0}, {"cursor": 0}, {"jobs": [str(uuid.uuid4())]}):
        ws.send(json.dumps({"op": "subscribe", "project": a, **extra}))
        reply = reply_or_close(ws)
        assert isinstance(reply, dict) and reply["code"] == 403, (extra, reply)
    ws.send(json.dumps({"op": "auth", "jwt": outsider.jwt}))
    assert reply_or_close(ws)["op"] == "auth"  # type: ignore[index]
    ws.send(json.dumps({"op": "subscribe", "project": a}))
    assert reply_or_close(ws)["code"] == 403  # type: ignore[index]
    ws.close()
