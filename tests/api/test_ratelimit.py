"""Per-user rate limiting (``bulkjobs/ratelimit.py``, ``api/ratelimit.py``): the window
counter in Redis, the ``X-RateLimit-*`` headers on every authenticated answer of every
dialect, and 429 in each dialect's envelope past the limit."""

from __future__ import annotations

from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient
from redis.backoff import NoBackoff
from redis.retry import Retry

import api.ratelimit
from bulkjobs import keys
from bulkjobs.ratelimit import hit
from bulkjobs.settings import get_settings
from models.seed import SeededProject, SeedResult
from tests.api.dialects import bearer, history_record, jwt_of

pytestmark = pytest.mark.services

HEADERS = ("x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset")


@pytest.fixture
def limit(monkeypatch: pytest.MonkeyPatch) -> int:
    """A limit of 3 requests per minute, for this test only."""
    monkeypatch.setattr(get_settings(), "rate_limit", 3)
    monkeypatch.setattr(get_settings(), "rate_limit_window", 60)
    return 3


def calls(client: TestClient, project: SeededProject) -> dict[str, Any]:
    """One authenticated request per dialect (a callable each)."""
    jwt = jwt_of(client, project)
    rec = history_record(project)
    return {
        "unicat": lambda: client.post(f"/api/p/{project.gid}/records/root", json={},
                                      headers={"Authorization": f"Bearer {jwt}"}),
        "dato": lambda: client.get(f"/dato/p/{project.gid}/items/{rec.gid}",
                                   headers=bearer(project.api_key)),
        "plone": lambda: client.get(f"/plone/p/{project.gid}/{rec.gid}/@history",
                                    headers=bearer(project.api_key)),
    }


def test_window_counts_and_resets(redis_client: redis.Redis) -> None:
    """Requests count within a fixed window; the next window starts afresh; ``reset`` is the
    whole seconds left in the window; the counter expires after its window."""
    states = [hit(redis_client, "u1", limit=2, window=60, now=1200.5) for _ in range(3)]
    assert [(s.remaining, s.exceeded) for s in states] == [(1, False), (0, False), (0, True)]
    assert states[0].reset == 60 and hit(redis_client, "u1", limit=2, window=60,
                                         now=1259.2).reset == 1
    fresh = hit(redis_client, "u1", limit=2, window=60, now=1260.0)
    assert (fresh.remaining, fresh.exceeded) == (1, False)
    assert hit(redis_client, "u2", limit=2, window=60, now=1200.5).remaining == 1
    ttl = redis_client.ttl(keys.rate_limit("u1", 20))
    assert 0 < ttl <= 61


@pytest.mark.parametrize("dialect", ["unicat", "dato", "plone"])
def test_headers_on_every_authenticated_answer(client: TestClient, project: SeededProject,
                                               dialect: str) -> None:
    """Each dialect's authenticated answers carry the three headers; remaining goes down."""
    call = calls(client, project)[dialect]
    first, second = call(), call()
    assert first.status_code == second.status_code == 200
    assert all(h in first.headers for h in HEADERS)
    assert int(first.headers["x-ratelimit-limit"]) == get_settings().rate_limit
    assert int(second.headers["x-ratelimit-remaining"]) == int(
        first.headers["x-ratelimit-remaining"]) - 1
    assert 1 <= int(first.headers["x-ratelimit-reset"]) <= get_settings().rate_limit_window


def test_error_answers_after_authentication_carry_them_too(client: TestClient,
                                                           project: SeededProject) -> None:
    """A 404 to a known user is counted and carries the headers; an unauthenticated 401 is
    not counted and carries none."""
    known = client.get(f"/dato/p/{project.gid}/items/nope", headers=bearer(project.api_key))
    assert known.status_code == 404 and all(h in known.headers for h in HEADERS)
    anonymous = client.get(f"/dato/p/{project.gid}/items/nope")
    assert anonymous.status_code == 401 and not any(h in anonymous.headers for h in HEADERS)


def test_past_the_limit_each_dialect_answers_429_in_its_envelope(
    client: TestClient, project: SeededProject, limit: int
) -> None:
    """The request after the limit is 429 in the dialect's own error shape, with the headers
    (remaining 0, reset in seconds); the limit is per user, across dialects."""
    dialects = calls(client, project)  # the Unicat auth call is not counted
    for _ in range(limit):
        assert dialects["dato"]().status_code == 200
    unicat, dato, plone = (dialects[d]() for d in ("unicat", "dato", "plone"))
    for r in (unicat, dato, plone):
        assert r.status_code == 429, r.text
        assert r.headers["x-ratelimit-remaining"] == "0"
        assert r.headers["x-ratelimit-limit"] == str(limit)
        assert 1 <= int(r.headers["x-ratelimit-reset"]) <= 60
    assert unicat.json()["success"] is False and unicat.json()["result"]["code"] == 429
    assert dato.json()["data"][0]["type"] == "api_error"
    assert dato.json()["data"][0]["attributes"]["code"] == "RATE_LIMIT_EXCEEDED"
    assert plone.json()["type"] == "TooManyRequests"


def test_users_are_limited_separately(client: TestClient, seeded: SeedResult,
                                      limit: int) -> None:
    """Another user's requests do not use up this user's allowance."""
    a, b = seeded.projects
    for _ in range(limit + 1):
        client.get(f"/dato/p/{a.gid}/items/x", headers=bearer(a.api_key))
    other_user = seeded.users[1]
    r = client.post(f"/api/p/{a.gid}/login",
                    json={"username": other_user.username, "password": other_user.password})
    assert r.status_code == 200
    again = client.post(f"/api/p/{a.gid}/records/root", json={},
                        headers={"Authorization": f"Bearer {r.headers['authorization']}"})
    assert again.status_code == 200, again.text


def test_no_limit_means_no_headers(client: TestClient, project: SeededProject,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """``RATE_LIMIT=0`` switches the limit (and its headers) off."""
    monkeypatch.setattr(get_settings(), "rate_limit", 0)
    r = calls(client, project)["dato"]()
    assert r.status_code == 200 and not any(h in r.headers for h in HEADERS)


def test_redis_down_lets_requests_through(client: TestClient, project: SeededProject,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """When the counter cannot be reached the request is served (fail open), without the
    headers."""
    # Retried once without back-off, as the product's own clients are (bulkjobs.connections).
    dead = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2,
                       retry=Retry(NoBackoff(), 1))
    dato = calls(client, project)["dato"]
    monkeypatch.setattr(api.ratelimit, "get_redis", lambda: dead)
    r = dato()
    assert r.status_code == 200 and not any(h in r.headers for h in HEADERS)
