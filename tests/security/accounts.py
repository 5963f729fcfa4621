"""Helpers of the tests of authority from the database: changing a user row behind a live
token, a queued job per project, what ``/sync/get`` and a websocket let a token see."""

from __future__ import annotations

import json
import time
from typing import Any

import jwt as pyjwt
from fastapi.testclient import TestClient
from sqlalchemy import delete, update
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection

from bulkjobs.connections import get_synclog
from bulkjobs.settings import get_settings
from models.auth import ApiKey, Member, User
from models.engine import get_write_engine
from models.seed import SeedResult
from tests.security.conftest import call
from tests.stream.conftest import WAIT
from tests.worker.helpers import new_job

REALM = 'Bearer realm="JWT access to bulkjobs."'


def set_user(gid: str, **values: Any) -> None:
    """Change a user row directly (``ops=False``, ``disabled=True`` …)."""
    with get_write_engine().begin() as conn:
        conn.execute(update(User).where(User.gid == gid).values(**values))


def delete_user(gid: str) -> None:
    """Remove a user with their memberships and API keys."""
    with get_write_engine().begin() as conn:
        conn.execute(delete(Member).where(Member.user_gid == gid))
        conn.execute(delete(ApiKey).where(ApiKey.user_gid == gid))
        conn.execute(delete(User).where(User.gid == gid))


def queued_jobs(seeded: SeedResult) -> list[str]:
    """One queued job per seeded project (A's first); their tokens."""
    return [new_job(get_synclog(), p, "bulk_delete_records", [p.heads[0]])
            for p in seeded.projects]


def synced_jobs(client: TestClient, jwt: str) -> set[str]:
    """The job tokens ``/sync/get`` from cursor 0 shows to ``jwt``."""
    r = call(client, "/sync/get", jwt, {"cc_cursor": 0})
    assert r.status_code == 200, r.text
    return {e["data_key"] for e in r.json()["result"]["sync"] if e["type"] == "cc"}


def claims_of(jwt: str) -> dict[str, Any]:
    """A JWT's payload (checked with the test secret)."""
    return dict(pyjwt.decode(jwt, get_settings().effective_jwt_secret, algorithms=["HS256"]))


def refused(r: Any) -> bool:
    """A 401 in the Unicat envelope, with the ``WWW-Authenticate`` header the official
    client drops its token on, and no renewed token."""
    return (r.status_code == 401 and r.headers.get("www-authenticate") == REALM
            and "authorization" not in r.headers and r.json()["result"]["code"] == 401)


def subscribe(ws: ClientConnection, project: str, **extra: Any) -> dict[str, Any]:
    """Subscribe and return the answer (``subscribed`` or an error), skipping sync frames."""
    ws.send(json.dumps({"op": "subscribe", "project": project, **extra}))
    while True:
        msg = json.loads(ws.recv(timeout=WAIT))
        if msg["op"] != "sync":
            return dict(msg)


def close_code(ws: ClientConnection, within: float = 3 * WAIT) -> int:
    """The code the server closes ``ws`` with, reading (and dropping) frames meanwhile; fails
    if it stays open ``within`` seconds (a liveness bound, well above MEMBERSHIP_REFRESH)."""
    deadline = time.monotonic() + within
    try:
        while time.monotonic() < deadline:
            try:
                ws.recv(timeout=0.5)
            except TimeoutError:
                continue
    except ConnectionClosed:
        assert ws.close_code is not None
        return ws.close_code
    raise AssertionError("the connection stayed open")


def events_until(ws: ClientConnection, cursor: int) -> list[dict[str, Any]]:
    """Every event received up to and including ``cursor`` (which must arrive); other
    frames (a revocation's error frames) are skipped."""
    out: list[dict[str, Any]] = []
    while not out or out[-1]["cursor"] < cursor:
        msg = json.loads(ws.recv(timeout=WAIT))
        if msg["op"] == "sync":
            out.extend(msg["sync"])
    return out


def revoked_projects(ws: ClientConnection, count: int) -> set[str]:
    """The projects of the next ``count`` "membership revoked" error frames."""
    out: set[str] = set()
    while len(out) < count:
        msg = json.loads(ws.recv(timeout=3 * WAIT))
        if msg["op"] == "error" and msg.get("code") == 403 and "project" in msg:
            out.add(msg["project"])
    return out
