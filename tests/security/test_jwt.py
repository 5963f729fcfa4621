"""Bad JWTs — wrong secret, expired, tampered, ``alg: none`` in any spelling, missing claims,
garbage — are refused on every surface: 401 on each HTTP dialect (Unicat ``/api`` and
``/sync``, DatoCMS ``/dato/p/…``, Plone ``/plone/p/…``, the ops API) and close code 4001 on
the websocket, by message and by upgrade header.  A refused request changes nothing and gets
no renewed token.

The DatoCMS and Plone cases are skipped while those dialects' routers are not registered in
the app (see :func:`dialect_registered`); they run as soon as the routers exist.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

import api.plone.routes
from api.app import app
from models import Job
from models.engine import get_engine
from models.seed import SeedResult
from tests.security.conftest import bad_tokens, call, checksum, jwt_of
from tests.stream.threaded import ThreadedServer, open_client, reply_or_close

REALM = 'Bearer realm="JWT access to bulkjobs."'


def dialect_registered(prefix: str) -> bool:
    """Does the app have routes under ``prefix`` (``/dato/``, ``/plone/``)?  Read from the
    OpenAPI document: included routers do not list their paths in ``app.routes``."""
    return any(path.startswith(prefix) for path in app.openapi()["paths"])


@dataclass(frozen=True)
class Surface:
    """One authenticated HTTP endpoint: how to call it for seeded project A."""

    name: str
    dialect: str  # "unicat", "dato", "plone", "ops"
    method: str
    path: Callable[[SeedResult], str]
    body: Callable[[SeedResult], Any] = lambda s: {}


def _a(s: SeedResult) -> str:
    return s.projects[0].gid


SURFACES = [
    Surface("records/root", "unicat", "POST", lambda s: f"/api/p/{_a(s)}/records/root"),
    Surface("records/get", "unicat", "POST", lambda s: f"/api/p/{_a(s)}/records/get",
            lambda s: {"record": s.projects[0].root}),
    Surface("records/bulk/delete", "unicat", "POST",
            lambda s: f"/api/p/{_a(s)}/records/bulk/delete",
            lambda s: {"selection": [s.projects[0].root]}),
    Surface("jobs/list", "unicat", "POST", lambda s: f"/api/p/{_a(s)}/jobs/list"),
    Surface("init", "unicat", "POST", lambda s: f"/api/p/{_a(s)}/init"),
    Surface("sync/cursors", "unicat", "POST", lambda s: "/sync/cursors"),
    Surface("sync/get", "unicat", "POST", lambda s: "/sync/get", lambda s: {"cc_cursor": 0}),
    Surface("ops/api/stats", "ops", "GET", lambda s: "/ops/api/stats"),
    Surface("items/<gid>", "dato", "GET",
            lambda s: f"/dato/p/{_a(s)}/items/{s.projects[0].root}"),
    Surface("items/<gid>/versions", "dato", "GET",
            lambda s: f"/dato/p/{_a(s)}/items/{s.projects[0].root}/versions"),
    Surface("versions/<id>/restore", "dato", "POST",
            lambda s: f"/dato/p/{_a(s)}/versions/AAAAAAAAAAAAAAAAAAAAAA/restore"),
    Surface("job-results/<token>", "dato", "GET",
            lambda s: f"/dato/p/{_a(s)}/job-results/{uuid.uuid4()}"),
    Surface("@history", "plone", "GET",
            lambda s: f"/plone/p/{_a(s)}/{s.projects[0].root}/@history"),
    Surface("@history/0", "plone", "GET",
            lambda s: f"/plone/p/{_a(s)}/{s.projects[0].root}/@history/0"),
    Surface("PATCH @history", "plone", "PATCH",
            lambda s: f"/plone/p/{_a(s)}/{s.projects[0].root}/@history",
            lambda s: {"version": 0}),
]
PREFIXES = {"dato": "/dato/", "plone": "/plone/"}


def _skip_unregistered(surface: Surface) -> None:
    prefix = PREFIXES.get(surface.dialect)
    if prefix is not None and not dialect_registered(prefix):
        pytest.skip(f"the {surface.dialect} dialect's router is not registered yet")


def jobs_count() -> int:
    with get_engine().connect() as conn:
        return int(conn.execute(select(func.count()).select_from(Job)).scalar_one())


def _request(client: TestClient, surface: Surface, seeded: SeedResult,
             authorization: str | None) -> Any:
    headers = {} if authorization is None else {"Authorization": authorization}
    return call(client, surface.path(seeded), body=surface.body(seeded), method=surface.method,
                headers=headers)


@pytest.mark.parametrize("surface", SURFACES, ids=[f"{s.dialect}:{s.name}" for s in SURFACES])
def test_valid_jwt_is_accepted(client: TestClient, seeded: SeedResult, surface: Surface,
                               monkeypatch: pytest.MonkeyPatch):
    """The control: each surface accepts the owner's valid JWT (no 401)."""
    _skip_unregistered(surface)
    # No worker runs here: a revert answers 202 after its wait, which need not be 30 s.
    monkeypatch.setattr(api.plone.routes, "REVERT_WAIT", 0.2)
    r = _request(client, surface, seeded, f"Bearer {jwt_of(seeded)}")
    assert r.status_code != 401, r.text
    assert r.status_code < 500, r.text


def _authorizations(seeded: SeedResult) -> dict[str, str | None]:
    """Every bad way to authenticate: the bad tokens, and no or a non-bearer header."""
    out: dict[str, str | None] = {
        kind: f"Bearer {token}" for kind, token in bad_tokens(seeded.users[0].gid).items()
    }
    out.update({"missing": None, "bearer-empty": "Bearer ",
                "basic-auth": "Basic b3duZXI6cGFzc3dvcmQ="})
    return out


@pytest.mark.parametrize("surface", SURFACES, ids=[f"{s.dialect}:{s.name}" for s in SURFACES])
def test_bad_jwt_is_401_everywhere(client: TestClient, seeded: SeedResult, surface: Surface):
    """Every bad token is a 401 on every surface, with no renewed JWT and nothing queued."""
    _skip_unregistered(surface)
    for kind, authorization in _authorizations(seeded).items():
        r = _request(client, surface, seeded, authorization)
        assert r.status_code == 401, (kind, r.status_code, r.text)
        assert "authorization" not in r.headers, kind
        if surface.dialect in ("unicat", "ops"):
            assert r.headers["www-authenticate"] == REALM, kind
            body = r.json()
            assert body["success"] is False and body["result"]["code"] == 401, kind
        else:
            assert r.json(), kind  # the dialect's own JSON error body, never a bare page
    assert jobs_count() == 0


def test_bad_jwts_change_nothing(client: TestClient, seeded: SeedResult):
    """A burst of bad tokens against write endpoints leaves every content table as it was."""
    before = checksum()
    for token in bad_tokens(seeded.users[0].gid).values():
        for surface in SURFACES:
            if surface.dialect in PREFIXES and not dialect_registered(PREFIXES[surface.dialect]):
                continue
            _request(client, surface, seeded, f"Bearer {token}")
    assert checksum() == before and jobs_count() == 0


def test_token_of_a_real_user_signed_by_us_but_for_an_unknown_user_is_refused(
        client: TestClient, seeded: SeedResult):
    """A correctly signed token whose subject is no user (a deleted one) is a 401."""
    from bulkjobs.tokens import issue

    r = call(client, f"/api/p/{seeded.projects[0].gid}/records/root", issue(str(uuid.uuid4())))
    assert r.status_code == 401 and r.headers["www-authenticate"] == REALM


# -- the websocket ------------------------------------------------------------------------


@pytest.fixture
def stream(seeded: SeedResult):  # type: ignore[no-untyped-def]
    """A real stream server over the seeded database."""
    with ThreadedServer() as srv:
        yield srv


def test_bad_jwt_in_auth_message_closes_4001(stream: ThreadedServer, seeded: SeedResult):
    """Each bad token in the auth message closes the websocket with 4001, sending nothing."""
    for kind, token in bad_tokens(seeded.users[0].gid).items():
        ws = open_client(stream.url, None)
        ws.send(json.dumps({"op": "auth", "jwt": token}))
        assert reply_or_close(ws) == 4001, kind


def test_bad_jwt_in_upgrade_header_closes_4001(stream: ThreadedServer, seeded: SeedResult):
    """Each bad token in the upgrade's Authorization header closes with 4001 at once."""
    for kind, token in bad_tokens(seeded.users[0].gid).items():
        ws = open_client(stream.url, None, headers={"Authorization": f"Bearer {token}"})
        assert reply_or_close(ws) == 4001, kind


@pytest.mark.parametrize("kind", ["expired", "alg-none", "tampered-payload"])
def test_bad_jwt_on_reauth_closes_an_open_connection_4001(stream: ThreadedServer,
                                                          seeded: SeedResult, kind: str):
    """An authenticated connection that re-authenticates with a bad token is closed 4001."""
    ws = open_client(stream.url, jwt_of(seeded))
    ws.send(json.dumps({"op": "auth", "jwt": bad_tokens(seeded.users[0].gid)[kind]}))
    assert reply_or_close(ws) == 4001
