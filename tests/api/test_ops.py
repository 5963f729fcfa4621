"""The ops dashboard's routes: the page and its files, the stream URL, and the stats scoped
to the projects a user may watch."""

from __future__ import annotations

import re

import pytest
from sqlmodel import Session

from api.ops import ASSETS
from bulkjobs.connections import get_redis, get_synclog
from bulkjobs.settings import get_settings
from bulkjobs.tokens import issue
from models import ops
from models.accounts import add_member, create_user
from models.engine import get_write_engine
from models.seed import SeedResult
from worker.submit import submit

pytestmark = pytest.mark.services


def test_page_and_its_files_are_served(client):
    """/ops is the login page; its script and styles are local files with versioned URLs."""
    page = client.get("/ops")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'id="login-form"' in page.text and "<canvas" in page.text
    assert "{{version}}" not in page.text and "http" not in page.text.split("<body>")[1]
    script = client.get("/ops/static/ops.js")
    assert script.status_code == 200 and "requestAnimationFrame" in script.text
    assert client.get("/ops/static/ops.css").status_code == 200


@pytest.mark.parametrize(("headers", "expected"), [
    ({"host": "dash.example.com:8000"}, "ws://dash.example.com:{port}/sync"),
    ({"host": "[::1]:8000"}, "ws://[::1]:{port}/sync"),
    ({"host": "web:8000", "x-forwarded-host": "ops.example.com",
      "x-forwarded-proto": "https"}, "wss://ops.example.com:{port}/sync"),
    ({"host": "bad host\"<"}, "ws://127.0.0.1:{port}/sync"),
])
def test_config_points_at_the_stream_on_the_host_the_browser_used(client, headers, expected):
    """The stream URL is the browser's host with STREAM_PORT (proxies' headers honoured)."""
    r = client.get("/ops/api/config", headers=headers)
    assert r.status_code == 200
    assert r.json() == {"stream_url": expected.format(port=get_settings().stream_port)}


def test_stats_need_a_jwt(client, seeded: SeedResult):
    """Without a valid JWT the stats answer 401."""
    assert client.get("/ops/api/stats").status_code == 401
    r = client.get("/ops/api/stats", headers={"Authorization": "Bearer not-a-jwt"})
    assert r.status_code == 401


def test_stats_cover_every_project_for_ops_and_their_own_for_others(client, seeded: SeedResult):
    """An ops user sees the jobs of every project; a member only those of his projects."""
    p0, p1 = seeded.projects[0].gid, seeded.projects[1].gid
    with Session(get_write_engine(), expire_on_commit=False) as session:
        member = create_user(session, username="only-p0", password="pw")
        add_member(session, user=member, project_gid=p0)
    for project in (p0, p1, p1):
        submit(project_gid=project, job="bulk_delete_records", params={"selection": []},
               actor={"type": "user", "id": "tester"}, log=get_synclog(),
               enqueue=lambda _token: None)
    ops.beat_worker(get_redis(), "stats-test@host")
    ops_user = seeded.users[2]
    jwt = issue(ops_user.gid, ops=True)
    r = client.get("/ops/api/stats", headers={"Authorization": f"Bearer {jwt}"})
    assert r.status_code == 200, r.text
    assert r.headers["authorization"]  # a renewed JWT, as on every authenticated answer
    body = r.json()
    assert body["jobs"]["queued"] == 3
    assert set(body["projects"]) == {p0, p1}
    assert "stats-test@host" in body["workers"]["hostnames"]
    assert body["workers"]["alive"] == len(body["workers"]["hostnames"])
    assert isinstance(body["queue_depth"], int)
    assert set(body["throughput"]) == {"window", "items_per_s", "jobs_per_s"}

    mine = client.get("/ops/api/stats",
                      headers={"Authorization": f"Bearer {issue(member.gid)}"}).json()
    assert mine["jobs"]["queued"] == 1
    assert set(mine["projects"]) == {p0}


def test_every_file_of_the_page_is_served_and_versioned(client):
    """Each script and stylesheet the page lists is served and is one of the files whose
    content makes the version in the URLs (so a change to any of them is never cached)."""
    page = client.get("/ops").text
    listed = re.findall(r'(?:src|href)="/ops/static/([\w.-]+)\?v=([0-9a-f]{12})"', page)
    assert sorted(name for name, _ in listed) == sorted(ASSETS)
    assert len({version for _, version in listed}) == 1
    for name, _ in listed:
        assert client.get(f"/ops/static/{name}").status_code == 200, name


def test_stats_say_which_watched_scopes_are_paused(client, seeded: SeedResult):
    """After a project's pause and the ops pause, ops users' stats list both; a member of
    the other project sees only the ops pause ("*"), not the project it does not watch."""
    first, second = seeded.projects
    opsh = {"Authorization": f"Bearer {issue(seeded.users[2].gid, ops=True)}"}
    with Session(get_write_engine(), expire_on_commit=False) as session:
        member = create_user(session, username="only-p1", password="pw")
        add_member(session, user=member, project_gid=second.gid)
    watcher = {"Authorization": f"Bearer {issue(member.gid)}"}
    assert client.get("/ops/api/stats", headers=opsh).json()["paused"] == []
    assert client.post(f"/api/p/{first.gid}/jobs/pause", headers=opsh).status_code == 200
    assert client.post("/ops/api/jobs/pause", headers=opsh).status_code == 200
    assert client.get("/ops/api/stats", headers=opsh).json()["paused"] == sorted(
        ["*", first.gid])
    assert client.get("/ops/api/stats", headers=watcher).json()["paused"] == ["*"]
    assert client.post("/ops/api/jobs/resume", headers=opsh).status_code == 200
    assert client.get("/ops/api/stats", headers=opsh).json()["paused"] == [first.gid]
