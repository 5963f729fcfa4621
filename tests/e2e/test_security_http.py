"""Security over the real web process (the Procfile's ``python -m uvicorn api.app:app``):
an ops user whose ``ops`` flag is taken away is refused ops access at the next request with
the same token; a JWT made from project A's API key is refused on project B in every
dialect; a flood of failed logins is answered 429 with ``Retry-After``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine
from sqlmodel import Session

from bulkjobs.settings import get_settings
from models.accounts import remove_ops
from models.engine import get_engine, get_write_engine
from models.seed import SeedResult, seed
from tests.e2e import procfile

pytestmark = pytest.mark.e2e

#: Failed logins of one user name the web process allows per window (set low for the test).
FAILURES_PER_NAME = 3


@pytest.fixture(scope="module")
def web(schema: Engine) -> Iterator[str]:
    """The web process, from its Procfile command; its base URL."""
    with procfile.serving_web(LOGIN_FAILURES_PER_NAME=str(FAILURES_PER_NAME)) as (_, base):
        yield base


@pytest.fixture
def seeded(services: Engine) -> SeedResult:
    """Two small projects with their owner, member and ops user (a member of neither)."""
    with get_write_engine().begin() as conn:
        return seed(conn, records=31, projects=2, seed_value=7)


def request(method: str, url: str, jwt: str | None = None, body: Any = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {jwt}"} if jwt is not None else {}
    json_body = (body if body is not None else {}) if method != "GET" else None
    return httpx.request(method, url, headers=headers, json=json_body, timeout=30)


def logged_in(web: str, username: str, password: str) -> str:
    """The JWT of a password login."""
    r = request("POST", f"{web}/api/login", body={"username": username, "password": password})
    assert r.status_code == 200, r.text
    return str(r.headers["authorization"])


def test_ops_access_ends_at_the_next_request_once_the_flag_is_removed(web: str,
                                                                      seeded: SeedResult):
    """The ops user's token opens a project they are no member of; after ``remove_ops`` the
    same token is refused there (403) and on the ops switch, with no new login."""
    ops_user, a = seeded.users[2], seeded.projects[0]
    jwt = logged_in(web, ops_user.username, ops_user.password)
    assert request("POST", f"{web}/api/p/{a.gid}/jobs/list", jwt).status_code == 200

    with Session(get_engine()) as session:
        remove_ops(session, username=ops_user.username)
    r = request("POST", f"{web}/api/p/{a.gid}/jobs/list", jwt)
    assert r.status_code == 403, r.text
    assert r.json()["result"]["code"] == 403
    r = request("POST", f"{web}/ops/api/jobs/pause", jwt)
    assert r.status_code == 403, r.text


def test_a_jwt_of_project_as_api_key_is_refused_on_project_b(web: str, seeded: SeedResult):
    """The owner is a member of both projects, but the JWT made from A's API key opens A
    only: B's routes answer 403 in each dialect, A's 200."""
    a, b = seeded.projects
    r = request("POST", f"{web}/api/p/{a.gid}/auth", body={"api_key": a.api_key})
    assert r.status_code == 200, r.text
    jwt = str(r.headers["authorization"])
    for project, status in ((a, 200), (b, 403)):
        for method, path in (("POST", f"/api/p/{project.gid}/jobs/list"),
                             ("GET", f"/dato/p/{project.gid}/items/{project.root}"),
                             ("GET", f"/plone/p/{project.gid}/{project.root}/@history")):
            r = request(method, f"{web}{path}", jwt)
            assert r.status_code == status, (path, r.text)


def test_a_login_flood_is_answered_429_with_retry_after(web: str, seeded: SeedResult):
    """As many wrong passwords for one name as the web process allows, then the next login
    of that name — with the right password — is a 429 in the Unicat envelope that says
    when to come back, and gives no token."""
    user, a = seeded.users[1], seeded.projects[0]
    for i in range(FAILURES_PER_NAME):
        r = request("POST", f"{web}/api/p/{a.gid}/login",
                    body={"username": user.username, "password": f"wrong-{i}"})
        assert r.status_code == 401, r.text
    r = request("POST", f"{web}/api/login",
                body={"username": user.username, "password": user.password})
    assert r.status_code == 429, r.text
    assert r.json()["success"] is False and r.json()["result"]["code"] == 429
    wait = int(r.headers["retry-after"])
    assert r.json()["result"]["info"]["retry_after"] == wait
    assert 1 <= wait <= get_settings().login_failure_window
    assert "authorization" not in r.headers
