"""Secrets at rest: API keys are stored as SHA-256 digests only, passwords as salted scrypt
hashes only; no table ever holds either in plain text, and checking a password always runs
the key-derivation function — for unknown usernames too, so timing does not tell which
usernames exist."""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlmodel import Session, SQLModel

from bulkjobs import tokens
from bulkjobs.errors import Unauthorized
from models.accounts import create_user, user_for_password
from models.auth import ApiKey, User
from models.engine import get_engine
from models.seed import SeedResult
from tests.security.conftest import Outsider, call


def every_text_in_the_database() -> str:
    """Every value of every row of every table, as one string (the test database is small)."""
    parts: list[str] = []
    with get_engine().connect() as conn:
        for table in SQLModel.metadata.sorted_tables:
            for row in conn.execute(select(table)):
                parts.append(repr(tuple(row)))
    return "\n".join(parts)


def test_api_keys_are_stored_as_digests_only(seeded: SeedResult, outsider: Outsider):
    """Each key's row holds sha256(key), and no table holds the key itself anywhere."""
    keys = [p.api_key for p in seeded.projects] + [outsider.api_key]
    with Session(get_engine()) as session:
        rows = session.execute(select(ApiKey)).scalars().all()
    digests = {r.key_hash for r in rows}
    assert {hashlib.sha256(k.encode()).hexdigest() for k in keys} <= digests
    assert all(len(d) == 64 and int(d, 16) >= 0 for d in digests)
    dump = every_text_in_the_database()
    for key in keys:
        assert key not in dump


def test_api_key_digest_alone_does_not_authenticate(client: TestClient, seeded: SeedResult):
    """Someone who read the apikey table cannot use a stored digest as a key."""
    project = seeded.projects[0]
    digest = tokens.api_key_digest(project.api_key)
    r = call(client, f"/api/p/{project.gid}/auth", None, {"api_key": digest})
    assert r.status_code == 401
    r = call(client, f"/dato/p/{project.gid}/items/{project.root}", digest, method="GET")
    assert r.status_code == 401


def test_passwords_are_stored_as_salted_scrypt_only(seeded: SeedResult, outsider: Outsider):
    """Stored form is scrypt$<16-byte salt>$<32-byte digest>; equal passwords hash apart;
    no table holds a password in plain text."""
    with Session(get_engine(), expire_on_commit=False) as session:
        twin = create_user(session, username="twin", password=outsider.password)
        users = session.execute(select(User)).scalars().all()
    for user in users:
        scheme, salt, digest = user.password_hash.split("$")
        assert scheme == "scrypt"
        assert len(base64.b64decode(salt)) == 16 and len(base64.b64decode(digest)) == 32
    stored = {u.gid: u.password_hash for u in users}
    assert stored[twin.gid] != stored[outsider.gid]  # per-user salt
    dump = every_text_in_the_database()
    for password in [u.password for u in seeded.users] + [outsider.password]:
        assert password not in dump


@pytest.fixture
def scrypt_calls(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Record every scrypt call bulkjobs.tokens makes (the real KDF still runs)."""
    calls: list[dict[str, Any]] = []
    real = hashlib.scrypt

    def spy(password: bytes, **kw: Any) -> bytes:
        calls.append(kw)
        return real(password, **kw)

    monkeypatch.setattr(tokens.hashlib, "scrypt", spy)
    return calls


def test_login_checks_the_password_with_slow_scrypt(client: TestClient, seeded: SeedResult,
                                                    scrypt_calls: list[dict[str, Any]]):
    """A login, right or wrong, runs scrypt with a work factor of at least 2**14."""
    user, project = seeded.users[1], seeded.projects[0]
    for password in (user.password, "wrong"):
        call(client, f"/api/p/{project.gid}/login", None,
             {"username": user.username, "password": password})
    assert len(scrypt_calls) == 2
    for kw in scrypt_calls:
        assert kw["n"] >= 2**14 and kw["r"] >= 8 and kw["dklen"] >= 32


def test_unknown_username_also_runs_the_kdf(seeded: SeedResult,
                                            scrypt_calls: list[dict[str, Any]]):
    """A login for a username that does not exist costs one scrypt too (no timing oracle)."""
    with Session(get_engine()) as session:
        for attempt in range(2):  # the first attempt also builds the (cached) decoy hash
            scrypt_calls.clear()
            with pytest.raises(Unauthorized):
                user_for_password(session, username=f"nobody-{attempt}", password="whatever")
    assert len(scrypt_calls) == 1


@pytest.mark.parametrize("stored", ["", "plain-text-password", "md5$abc$def", "scrypt$!!$!!",
                                    "scrypt$$", "scrypt$a$b$c"])
def test_malformed_stored_hash_never_matches(stored: str):
    """A stored value that is not a well-formed scrypt hash matches no password, not even
    itself, and raises nothing."""
    assert tokens.check_password(stored, stored) is False
    assert tokens.check_password("plain-text-password", stored) is False
