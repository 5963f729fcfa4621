"""Failed logins are limited: per user name (``LOGIN_FAILURES_PER_NAME``) and per client
address (``LOGIN_FAILURES_PER_ADDRESS``) in fixed windows of ``LOGIN_FAILURE_WINDOW``
seconds, counted in Redis across Unicat's ``/api/login``, ``/api/p/…/login`` and
``/api/p/…/auth``.  Past a limit a login is a 429 with ``Retry-After`` in the Unicat envelope
before any password is checked — also when the password is right — and a successful login
resets nothing.  With Redis unreachable, logins still work."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient
from redis.backoff import NoBackoff
from redis.retry import Retry

import api.ratelimit
from api.app import app
from bulkjobs import tokens
from bulkjobs.settings import get_settings
from models.seed import SeedResult
from tests.security.conftest import Outsider, call, checksum


@pytest.fixture
def scrypts(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the scrypt runs of bulkjobs.tokens (the real KDF still runs)."""
    runs: list[int] = []
    real = hashlib.scrypt

    def counted(password: bytes, **kw: Any) -> bytes:
        runs.append(1)
        return real(password, **kw)

    monkeypatch.setattr(tokens.hashlib, "scrypt", counted)
    return runs


def login(client: TestClient, path: str, username: str, password: str) -> Any:
    return call(client, path, None, {"username": username, "password": password})


def assert_limited(r: Any) -> None:
    """A 429 in the Unicat envelope that says when to come back, and no JWT."""
    assert r.status_code == 429, r.text
    assert r.json()["success"] is False and r.json()["result"]["code"] == 429
    window = get_settings().login_failure_window
    assert 1 <= int(r.headers["retry-after"]) <= window
    assert r.json()["result"]["info"]["retry_after"] == int(r.headers["retry-after"])
    assert "authorization" not in r.headers


def test_failed_logins_of_one_name_are_limited(client: TestClient, seeded: SeedResult,
                                               outsider: Outsider, scrypts: list[int],
                                               monkeypatch: pytest.MonkeyPatch):
    """As many wrong passwords for one name as allowed (on either login route): the next
    login of that name is a 429 even with the right password, and spends no scrypt; another
    name from the same address still logs in."""
    user, a = seeded.users[1], seeded.projects[0]
    limit = 4
    monkeypatch.setattr(get_settings(), "login_failures_per_name", limit, raising=False)
    before = checksum()
    for i in range(limit):
        path = "/api/login" if i % 2 else f"/api/p/{a.gid}/login"
        assert login(client, path, user.username, f"wrong-{i}").status_code == 401
    scrypts.clear()
    assert_limited(login(client, f"/api/p/{a.gid}/login", user.username, user.password))
    assert_limited(login(client, "/api/login", user.username, user.password))
    assert scrypts == []
    assert login(client, "/api/login", outsider.username, outsider.password).status_code == 200
    assert checksum() == before


def test_failed_logins_from_one_address_are_limited(client: TestClient, seeded: SeedResult,
                                                    monkeypatch: pytest.MonkeyPatch):
    """Failures of any names and API keys from one address add up; a successful login in
    between does not reset them; past the limit even a right API key or password is a 429."""
    monkeypatch.setattr(get_settings(), "login_failures_per_address", 4, raising=False)
    a = seeded.projects[0]
    user = seeded.users[1]
    assert login(client, "/api/login", "nobody-1", "x").status_code == 401
    assert call(client, f"/api/p/{a.gid}/auth", None, {"api_key": "wrong"}).status_code == 401
    assert login(client, "/api/login", user.username, user.password).status_code == 200
    assert login(client, f"/api/p/{a.gid}/login", "nobody-2", "x").status_code == 401
    assert call(client, f"/api/p/{a.gid}/auth", None, {"api_key": "wrong"}).status_code == 401
    assert_limited(call(client, f"/api/p/{a.gid}/auth", None, {"api_key": a.api_key}))
    assert_limited(login(client, "/api/login", user.username, user.password))


def test_logins_work_without_redis(client: TestClient, seeded: SeedResult,
                                   monkeypatch: pytest.MonkeyPatch):
    """With the failure counters out of reach a login is still checked and answered (fail
    open): wrong is 401, right is 200."""
    # Retried once without back-off, as the product's own clients are (bulkjobs.connections).
    dead = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2,
                       retry=Retry(NoBackoff(), 1))
    monkeypatch.setattr(api.ratelimit, "get_redis", lambda: dead)
    user = seeded.users[1]
    assert login(client, "/api/login", user.username, "wrong").status_code == 401
    assert login(client, "/api/login", user.username, user.password).status_code == 200


def test_the_429_and_its_retry_after_are_documented():
    """The OpenAPI document of each login route shows the 429 with its Retry-After."""
    paths = app.openapi()["paths"]
    for path in ("/api/login", "/api/p/{project}/login", "/api/p/{project}/auth"):
        response = paths[path]["post"]["responses"]["429"]
        assert response["headers"]["Retry-After"]["required"] is True, path
