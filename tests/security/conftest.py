"""Fixtures of the security tests: an in-process client of the web app, an outsider (a user
who is a member of the second seeded project only), forged tokens, and a checksum of every
content table to prove that an attack changed nothing."""

from __future__ import annotations

import base64
import hashlib
import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import jwt as pyjwt
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Table, func, select
from sqlmodel import Session, SQLModel

from api.app import app
from bulkjobs import tokens
from bulkjobs.connections import get_synclog
from bulkjobs.settings import get_settings
from models import Job
from models.accounts import add_member, create_api_key, create_user
from models.engine import get_engine, get_write_engine
from models.seed import SeedResult, seed
from tests.worker.helpers import cfg, run_to_end

#: Tables whose content no read, no rejected request and no empty job may change.  (``job``,
#: ``job_item`` and the read tokens of ``records/bulk/get`` are bookkeeping of requests.)
CONTENT_TABLES = ("project", "user", "member", "apikey", "record", "record_version",
                  "workflow_entry", "record_tombstone", "schema_item")


@pytest.fixture
def seeded(services: Any) -> SeedResult:
    """Two small demo projects (301 records each: three subtrees of 100, none deleted) with
    their users and API keys; smaller than the suite's own, as every attack here starts
    from a fresh pair."""
    with get_write_engine().begin() as conn:
        return seed(conn, records=301, projects=2, seed_value=7)


@pytest.fixture
def client() -> Iterator[TestClient]:
    """The web app in-process; server errors come back as responses, as over the wire."""
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


def call(client: TestClient, path: str, jwt: str | None = None, body: Any = None,
         method: str = "POST", **kwargs: Any) -> Any:
    """One request with an optional bearer JWT; ``body`` is sent as JSON unless ``content``
    is given."""
    headers = dict(kwargs.pop("headers", {}))
    if jwt is not None:
        headers["Authorization"] = f"Bearer {jwt}"
    if "content" not in kwargs and method != "GET":
        kwargs["json"] = body if body is not None else {}
    return client.request(method, path, headers=headers, **kwargs)


def jwt_of(seeded: SeedResult, index: int = 0) -> str:
    """A valid JWT of seeded user ``index`` (0 owner, 1 member, 2 ops)."""
    user = seeded.users[index]
    return tokens.issue(user.gid, ops=user.ops)


@dataclass
class Outsider:
    """A user who is an active member of project B only, with an API key for B."""

    gid: str
    username: str
    password: str
    api_key: str
    jwt: str


@pytest.fixture
def outsider(seeded: SeedResult) -> Outsider:
    """A member of the second seeded project only (the attacker of project A)."""
    password = "pw-" + uuid.uuid4().hex
    with Session(get_engine(), expire_on_commit=False) as session:
        user = create_user(session, username=f"outsider-{uuid.uuid4().hex[:8]}",
                           password=password)
        add_member(session, user=user, project_gid=seeded.projects[1].gid)
        key = create_api_key(session, user=user, project_gid=seeded.projects[1].gid)
    return Outsider(user.gid, user.username, password, key, tokens.issue(user.gid))


def checksum() -> dict[str, tuple[int, str]]:
    """Row count and a digest of every row (in primary-key order) of each content table."""
    out: dict[str, tuple[int, str]] = {}
    with get_engine().connect() as conn:
        for name in CONTENT_TABLES:
            table: Table = SQLModel.metadata.tables[name]
            count = int(conn.execute(select(func.count()).select_from(table)).scalar_one())
            digest = hashlib.sha256()
            for row in conn.execute(select(table).order_by(*table.primary_key.columns)):
                digest.update(repr(tuple(row)).encode())
            out[name] = (count, digest.hexdigest())
    return out


def finish(token: str, timeout: float = 60.0) -> dict[str, Any]:
    """Run a queued job to its end in-process and return its final row (status, info).  A
    job that a real worker of the session took first (the e2e tests' worker shares the
    queue) is waited for instead."""
    outcomes = run_to_end(token, get_synclog(), cfg())
    deadline = time.monotonic() + timeout
    while True:
        with get_engine().connect() as conn:
            row = conn.execute(select(Job.status, Job.info).where(Job.token == token)).one()
        if row.status in ("done", "rejected"):
            return {"status": row.status, "info": row.info}
        assert outcomes[-1] == "skipped" and time.monotonic() < deadline, (outcomes, row)
        time.sleep(0.1)


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def bad_tokens(user: str) -> dict[str, str]:
    """JWTs no server may accept, for ``user``: forged, expired, tampered, ``alg: none`` …"""
    secret = get_settings().effective_jwt_secret
    now = int(time.time())
    claims = {"sub": user, "iat": now, "exp": now + 600}
    valid = tokens.issue(user)
    header, _, signature = valid.split(".")
    other = str(uuid.uuid4())
    return {
        "wrong-secret": pyjwt.encode(claims, "not-the-secret-but-long-enough-0123456789", "HS256"),
        "expired": pyjwt.encode({**claims, "iat": now - 7200, "exp": now - 3600}, secret, "HS256"),
        "alg-none": f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(claims)}.",
        "alg-None": f"{_b64({'alg': 'None', 'typ': 'JWT'})}.{_b64(claims)}.",
        "alg-NONE-signed": f"{_b64({'alg': 'NONE', 'typ': 'JWT'})}.{_b64(claims)}.{signature}",
        "tampered-payload": f"{header}.{_b64({**claims, 'sub': other, 'ops': True})}.{signature}",
        "signature-stripped": f"{header}.{_b64(claims)}.",
        "no-exp": pyjwt.encode({"sub": user, "iat": now}, secret, "HS256"),
        "no-sub": pyjwt.encode({"iat": now, "exp": now + 600}, secret, "HS256"),
        "sub-not-a-string": pyjwt.encode({"sub": 7, "iat": now, "exp": now + 600}, secret,
                                         "HS256"),
        "garbage": "not-a-jwt",
        "empty-segments": "..",
    }

