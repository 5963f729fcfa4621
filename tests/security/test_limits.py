"""Resource limits an unauthenticated attacker runs into: request bodies over 10 MB are a 413
in every dialect before any credential is looked at — declared, chunked (no Content-Length)
or with a Content-Length that is not a number — and the per-user rate limit cannot be used
against someone else: requests with forged tokens naming a user never spend that user's
allowance.  (Per-dialect 429 shapes and headers: ``tests/api/test_ratelimit.py``.)"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from api.bodylimit import MAX_BODY
from bulkjobs.settings import get_settings
from models.seed import SeedResult
from tests.security.conftest import bad_tokens, call, checksum, jwt_of


def chunks(total: int, size: int = 1024 * 1024) -> Iterator[bytes]:
    """``total`` bytes of a JSON-ish body, streamed (sent chunked, without Content-Length)."""
    yield b'{"selection": ["'
    sent = 16
    while sent < total:
        piece = b"a" * min(size, total - sent)
        sent += len(piece)
        yield piece
    yield b'"]}'


def _paths(seeded: SeedResult) -> dict[str, tuple[str, str]]:
    a = seeded.projects[0]
    return {
        "unicat": ("POST", f"/api/p/{a.gid}/records/bulk/delete"),
        "unicat-auth": ("POST", f"/api/p/{a.gid}/auth"),
        "dato": ("POST", f"/dato/p/{a.gid}/versions/AAAAAAAAAAAAAAAAAAAAAA/restore"),
        "plone": ("PATCH", f"/plone/p/{a.gid}/{a.root}/@history"),
    }


@pytest.mark.parametrize("how", ["chunked", "declared", "not-a-number", "negative"])
def test_oversized_bodies_are_413_before_authentication(client: TestClient, seeded: SeedResult,
                                                        how: str):
    """Without any credentials, an oversized (or unmeasurable) body is refused with 413 in
    each dialect, and nothing is written."""
    before = checksum()
    for dialect, (method, path) in _paths(seeded).items():
        if how == "chunked":
            r = client.request(method, path, content=chunks(MAX_BODY + 1))
        else:
            length = {"declared": str(MAX_BODY + 1), "not-a-number": "12abc",
                      "negative": "-1"}[how]
            r = client.request(method, path, content=b"{}",
                               headers={"Content-Length": length})
        assert r.status_code == 413, (dialect, r.status_code, r.text[:200])
        assert r.json(), dialect  # the dialect's JSON error, not a bare page
    assert checksum() == before


def test_chunked_body_just_under_the_limit_is_read(client: TestClient, seeded: SeedResult):
    """The control: a chunked body of exactly 10 MB is read and answered (here: 401, since
    it carries no JWT), not cut off as too large."""
    method, path = _paths(seeded)["unicat"]
    r = client.request(method, path, content=chunks(MAX_BODY - 3))
    assert r.status_code == 401, r.text[:200]


def test_forged_tokens_do_not_spend_the_victims_allowance(
        client: TestClient, seeded: SeedResult, monkeypatch: pytest.MonkeyPatch):
    """Hammering with forged, expired and alg:none tokens naming a user leaves that user's
    rate-limit allowance untouched (tokens are verified before a request is counted)."""
    monkeypatch.setattr(get_settings(), "rate_limit", 3)
    monkeypatch.setattr(get_settings(), "rate_limit_window", 60)
    victim, project = seeded.users[0], seeded.projects[0]
    for _ in range(5):
        for token in bad_tokens(victim.gid).values():
            r = call(client, f"/api/p/{project.gid}/records/root", token)
            assert r.status_code == 401
    r = call(client, f"/api/p/{project.gid}/records/root", jwt_of(seeded))
    assert r.status_code == 200, r.text
    assert r.headers["x-ratelimit-remaining"] == "2"
