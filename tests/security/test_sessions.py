"""Sessions end.  A JWT carries its id, its login time and its user's token version; renewal
keeps the login time and no renewal outlives ``SESSION_MAX_AGE`` after it.  ``bulkjobs users
disable``, ``apikeys revoke`` and ``users remove-ops`` take effect on the user's next request
(a 401 with ``WWW-Authenticate``, so the official client drops its token) and reach open
websockets before their next delivery (closed with 4001, or the projects announced revoked):
no event appended after the revocation reaches them."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import jwt as pyjwt
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection

from bulkjobs import tokens
from bulkjobs.settings import get_settings
from cli.main import app as cli_app
from models.seed import SeedResult
from tests.security.accounts import (
    claims_of,
    close_code,
    events_until,
    queued_jobs,
    refused,
    revoked_projects,
    subscribe,
    synced_jobs,
)
from tests.security.conftest import call, jwt_of
from tests.security.test_api_key_tokens import key_jwt
from tests.stream.conftest import WAIT, append_job
from tests.stream.threaded import ThreadedServer, open_client


def cli(*args: str) -> Any:
    result = CliRunner().invoke(cli_app, list(args), env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    return result


def jobs_list(client: TestClient, seeded: SeedResult, jwt: str) -> Any:
    return call(client, f"/api/p/{seeded.projects[0].gid}/jobs/list", jwt)


# -- what a token carries, and how long a session lasts -----------------------------------


def test_tokens_carry_an_id_the_login_time_and_the_token_version(client: TestClient,
                                                                 seeded: SeedResult):
    """A login's JWT has jti, auth_time and ver; a renewal keeps auth_time and ver, and
    expires with the session at the latest."""
    owner = seeded.users[0]
    r = call(client, "/api/login", None, {"username": owner.username, "password": owner.password})
    first = claims_of(r.headers["authorization"])
    assert first["jti"] and first["ver"] == 0
    assert abs(first["auth_time"] - time.time()) < 60
    time.sleep(1.1)  # a renewal in a later second is a new token
    renewed = claims_of(jobs_list(client, seeded, r.headers["authorization"])
                        .headers["authorization"])
    assert renewed["jti"] != first["jti"] and renewed["auth_time"] == first["auth_time"]
    assert renewed["exp"] <= first["auth_time"] + get_settings().session_max_age


def test_a_session_older_than_session_max_age_is_401_even_renewed(client: TestClient,
                                                                  seeded: SeedResult):
    """A JWT whose session started SESSION_MAX_AGE ago is a 401, however recently it was
    issued; a session about to end, renewed on every request, ends on time."""
    owner = seeded.users[0]
    max_age = get_settings().session_max_age
    old = tokens.issue(owner.gid, auth_time=time.time() - max_age - 1)
    assert refused(jobs_list(client, seeded, old))
    assert refused(call(client, "/sync/get", old, {"cc_cursor": 0}))
    jwt = tokens.issue(owner.gid, auth_time=time.time() - max_age + 2)
    deadline = time.monotonic() + 4 * WAIT  # a liveness bound: the session has 2 s left
    while True:
        r = jobs_list(client, seeded, jwt)
        if r.status_code != 200:
            break
        assert time.monotonic() < deadline, "the renewed session never ended"
        jwt = r.headers["authorization"]
        time.sleep(0.2)
    assert refused(r), r.text


@pytest.mark.parametrize("claims", [
    {"prj": "a project"}, {"kid": "a key"}, {"prj": 1, "kid": "a key"}, {"ver": "0"},
    {"ver": 1.5}, {"auth_time": "yesterday"}, {"auth_time": True},
], ids=["prj-without-kid", "kid-without-prj", "prj-not-a-string", "ver-a-string",
        "ver-a-float", "auth_time-a-string", "auth_time-a-bool"])
def test_tokens_with_malformed_session_claims_are_401(client: TestClient, seeded: SeedResult,
                                                      claims: dict[str, Any]):
    """Correctly signed tokens whose session claims do not parse are refused."""
    now = int(time.time())
    payload = {"sub": seeded.users[0].gid, "iat": now, "exp": now + 600, "auth_time": now,
               "ver": 0, **claims}
    jwt = pyjwt.encode(payload, get_settings().effective_jwt_secret, "HS256")
    assert refused(jobs_list(client, seeded, jwt))


# -- the CLI's revocations over HTTP ------------------------------------------------------


def test_users_disable_refuses_every_token_and_login_of_the_user(client: TestClient,
                                                                 seeded: SeedResult):
    """After `users disable`, the user's JWTs (password and API-key ones) are 401 on the
    next request, and password and API-key logins are refused; another user is untouched."""
    owner = seeded.users[0]
    jwt, key = jwt_of(seeded), key_jwt(client, seeded)
    assert jobs_list(client, seeded, jwt).status_code == 200  # the control
    cli("users", "disable", owner.username)
    for token in (jwt, key):
        assert refused(jobs_list(client, seeded, token))
        assert refused(call(client, "/sync/get", token, {"cc_cursor": 0}))
    login = call(client, "/api/login", None,
                 {"username": owner.username, "password": owner.password})
    assert login.status_code == 401 and "authorization" not in login.headers
    project = seeded.projects[0]
    r = call(client, f"/api/p/{project.gid}/auth", None, {"api_key": project.api_key})
    assert r.status_code == 401 and "authorization" not in r.headers
    assert jobs_list(client, seeded, jwt_of(seeded, 1)).status_code == 200


def test_users_enable_lets_the_user_log_in_again_but_not_with_old_tokens(
        client: TestClient, seeded: SeedResult):
    """`users enable` after `users disable`: a new login works, the old JWT stays dead."""
    owner = seeded.users[0]
    jwt = jwt_of(seeded)
    cli("users", "disable", owner.username)
    cli("users", "enable", owner.username)
    assert refused(jobs_list(client, seeded, jwt))
    login = call(client, "/api/login", None,
                 {"username": owner.username, "password": owner.password})
    assert login.status_code == 200
    assert jobs_list(client, seeded, login.headers["authorization"]).status_code == 200


def _key_id(project_gid: str) -> str:
    listing = cli("apikeys", "list")
    rows = [line for line in listing.stdout.splitlines() if project_gid[:8] in line]
    assert len(rows) == 1, listing.stdout
    return str(rows[0].split("│")[1].strip())


def test_apikeys_revoke_refuses_the_key_and_its_tokens(client: TestClient, seeded: SeedResult):
    """After `apikeys revoke <id>`, JWTs made from that key are 401 (renewals too) and the
    key itself opens nothing; the user's other sessions and keys are untouched."""
    a, b = seeded.projects
    key = key_jwt(client, seeded)
    renewed = jobs_list(client, seeded, key).headers["authorization"]
    other_key = key_jwt(client, seeded, 1)
    assert claims_of(key)["kid"] == _key_id(a.gid)
    cli("apikeys", "revoke", _key_id(a.gid))
    for token in (key, renewed):
        assert refused(jobs_list(client, seeded, token))
    r = call(client, f"/api/p/{a.gid}/auth", None, {"api_key": a.api_key})
    assert r.status_code == 401 and "authorization" not in r.headers
    r = call(client, f"/dato/p/{a.gid}/items/{a.root}", None, method="GET",
             headers={"Authorization": f"Bearer {a.api_key}"})
    assert r.status_code == 401
    assert jobs_list(client, seeded, jwt_of(seeded)).status_code == 200
    assert call(client, f"/api/p/{b.gid}/jobs/list", other_key).status_code == 200


def test_users_remove_ops_ends_ops_access_at_the_next_request(client: TestClient,
                                                              seeded: SeedResult):
    """After `users remove-ops`, the ops user's JWT opens no project they are not a member
    of, and /sync/get no longer carries other projects' events."""
    jobs = queued_jobs(seeded)
    ops_user = seeded.users[2]
    jwt = jwt_of(seeded, 2)
    assert jobs_list(client, seeded, jwt).status_code == 200  # the control
    assert synced_jobs(client, jwt) >= set(jobs)
    cli("users", "remove-ops", ops_user.username)
    r = jobs_list(client, seeded, jwt)
    assert r.status_code == 403, r.text
    assert synced_jobs(client, jwt) == set()


# -- the CLI's revocations on the websocket -----------------------------------------------


@pytest.fixture
def stream(seeded: SeedResult):  # type: ignore[no-untyped-def]
    """A real stream server over the seeded database (membership refresh every 0.5 s)."""
    with ThreadedServer() as srv:
        yield srv


def test_users_disable_closes_open_websockets_4001(stream: ThreadedServer, seeded: SeedResult):
    """An open connection of a user disabled with the CLI, subscribed or not, is closed
    with 4001 within the refresh; its JWT no longer authenticates a new one."""
    owner = seeded.users[0]
    jwt = jwt_of(seeded)
    subscribed = open_client(stream.url, jwt)
    assert subscribe(subscribed, "*")["op"] == "subscribed"
    idle = open_client(stream.url, jwt)
    cli("users", "disable", owner.username)
    assert close_code(subscribed) == 4001
    assert close_code(idle) == 4001
    again = open_client(stream.url, None)
    again.send(json.dumps({"op": "auth", "jwt": jwt}))
    assert close_code(again) == 4001


def test_apikeys_revoke_closes_websockets_of_its_tokens(stream: ThreadedServer,
                                                        client: TestClient, seeded: SeedResult):
    """A connection authenticated with a JWT made from a revoked key is closed with 4001;
    the same user's password session stays open."""
    a = seeded.projects[0]
    keyed = open_client(stream.url, key_jwt(client, seeded))
    assert subscribe(keyed, a.gid)["op"] == "subscribed"
    owner = open_client(stream.url, jwt_of(seeded))
    assert subscribe(owner, a.gid)["op"] == "subscribed"
    cli("apikeys", "revoke", _key_id(a.gid))
    assert close_code(keyed) == 4001
    owner.send(json.dumps({"op": "subscribe", "project": a.gid}))
    assert json.loads(owner.recv(timeout=WAIT))["op"] == "subscribed"
    owner.close()


def test_users_remove_ops_narrows_an_open_websocket(stream: ThreadedServer, seeded: SeedResult):
    """After `users remove-ops`, an open "*" of the ops user (a member of nothing) loses
    every project, announced as revoked, and a new subscription to one is 403."""
    ops_user = seeded.users[2]
    ws = open_client(stream.url, jwt_of(seeded, 2))
    assert subscribe(ws, "*")["op"] == "subscribed"
    cli("users", "remove-ops", ops_user.username)
    assert revoked_projects(ws, 2) == {p.gid for p in seeded.projects}
    assert subscribe(ws, seeded.projects[0].gid)["code"] == 403
    ws.close()


# -- the CLI's revocations reach open websockets before their next delivery ---------------


@pytest.fixture
def unrefreshed(seeded: SeedResult):  # type: ignore[no-untyped-def]
    """A real stream server whose periodic re-judging of connections waits an hour: what
    reaches its connections right after a revocation is the revocation notice's doing."""
    with ThreadedServer(membership_refresh=3600) as srv:
        yield srv


def _after_revocation(ws: ClientConnection, project: str, marker: int
                      ) -> tuple[set[str], int | None, bool]:
    """Read ``ws`` until it is closed, ``project`` is announced revoked, or the event
    ``marker`` arrives: the projects announced revoked, the close code (None while open),
    and whether ``marker`` arrived."""
    revoked: set[str] = set()
    deadline = time.monotonic() + 3 * WAIT  # a liveness bound
    try:
        while project not in revoked:
            assert time.monotonic() < deadline, "neither revoked nor closed"
            try:
                msg = json.loads(ws.recv(timeout=0.5))
            except TimeoutError:
                continue
            if msg["op"] == "error" and msg.get("code") == 403 and "project" in msg:
                revoked.add(msg["project"])
            elif msg["op"] == "sync" and marker in {e["cursor"] for e in msg["sync"]}:
                return revoked, None, True
    except ConnectionClosed:
        return revoked, ws.close_code, False
    return revoked, None, False


def test_users_remove_ops_reaches_an_open_websocket_before_its_next_event(
        unrefreshed: ThreadedServer, seeded: SeedResult):
    """An event of a project appended at once after `users remove-ops` does not reach the
    former ops user's "*": every project is announced revoked first."""
    a = seeded.projects[0].gid
    ws = open_client(unrefreshed.url, jwt_of(seeded, 2))
    assert subscribe(ws, "*")["op"] == "subscribed"
    events_until(ws, append_job(a, str(uuid.uuid4())))  # the control: A's events flow
    cli("users", "remove-ops", seeded.users[2].username)
    marker = append_job(a, str(uuid.uuid4()))
    revoked, closed, delivered = _after_revocation(ws, a, marker)
    assert not delivered and closed is None and a in revoked
    assert revoked | revoked_projects(ws, 2 - len(revoked)) >= {p.gid for p in seeded.projects}
    ws.close()


def test_users_disable_reaches_an_open_websocket_before_its_next_event(
        unrefreshed: ThreadedServer, seeded: SeedResult):
    """An event of a project appended at once after `users disable` does not reach the
    user's subscription to it: the connection is closed with 4001 first."""
    a = seeded.projects[0].gid
    ws = open_client(unrefreshed.url, jwt_of(seeded))
    assert subscribe(ws, a)["op"] == "subscribed"
    events_until(ws, append_job(a, str(uuid.uuid4())))  # the control
    cli("users", "disable", seeded.users[0].username)
    marker = append_job(a, str(uuid.uuid4()))
    assert _after_revocation(ws, a, marker) == (set(), 4001, False)


def test_apikeys_revoke_reaches_an_open_websocket_before_its_next_event(
        unrefreshed: ThreadedServer, client: TestClient, seeded: SeedResult):
    """An event of the key's project appended at once after `apikeys revoke` does not reach
    a connection authenticated with a JWT made from the key: it is closed with 4001 first,
    while the same user's password session keeps receiving the project's events."""
    a = seeded.projects[0].gid
    keyed = open_client(unrefreshed.url, key_jwt(client, seeded))
    assert subscribe(keyed, a)["op"] == "subscribed"
    owner = open_client(unrefreshed.url, jwt_of(seeded))
    assert subscribe(owner, a)["op"] == "subscribed"
    events_until(keyed, append_job(a, str(uuid.uuid4())))  # the control
    cli("apikeys", "revoke", _key_id(a))
    marker = append_job(a, str(uuid.uuid4()))
    assert _after_revocation(keyed, a, marker) == (set(), 4001, False)
    assert events_until(owner, marker)[-1]["cursor"] == marker
    owner.close()
