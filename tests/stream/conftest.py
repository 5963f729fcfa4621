"""Fixtures and helpers of the stream tests: an in-process server on port 0 over the real
Redis (db 9) and database, raw websocket helpers, and sync-log appenders."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlmodel import Session
from websockets.asyncio.client import ClientConnection, connect

from bulkjobs import keys, tokens
from bulkjobs.connections import get_redis
from bulkjobs.synclog import SyncLog, job_event, record_event
from models.auth import User
from models.engine import get_engine
from models.seed import SeedResult
from stream.server import StreamServer

#: Upper bound for waiting on something that should happen; a test that hits it fails.
WAIT = 10.0


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def server(seeded: SeedResult) -> AsyncIterator[StreamServer]:
    """A stream server on 127.0.0.1:<free port>, short auth timeout and membership refresh."""
    async with StreamServer(
        host="127.0.0.1", port=0, auth_timeout=1.0, membership_refresh=0.2, block_ms=200,
    ) as srv:
        yield srv


def url(server: StreamServer, path: str = "/sync") -> str:
    return f"ws://127.0.0.1:{server.port}{path}"


def jwt_for(seeded: SeedResult, index: int) -> str:
    """JWT of seeded user ``index`` (0 owner, 1 member, 2 ops)."""
    user = seeded.users[index]
    return tokens.issue(user.gid, ops=user.ops)


def make_user(*, ops: bool = False) -> str:
    """Insert a user with no memberships; returns its gid."""
    gid = str(uuid.uuid4())
    with Session(get_engine()) as session:
        session.add(User(gid=gid, username=f"outsider-{gid[:8]}", ops=ops))
        session.commit()
    return gid


# -- the sync log -------------------------------------------------------------------------


def log() -> SyncLog:
    return SyncLog(get_redis())


def append_job(
    project: str, token: str, *, status: str = "processing", remaining: int = 0,
    total: int = 10, insert: bool = False, info: dict[str, Any] | None = None,
) -> int:
    """Append one job event to the cc space; returns its cursor."""
    t = time.time()
    event = job_event(
        token=token, project=project, job="bulk_delete_records", status=status,
        info=info if info is not None else {"total": total, "remaining": remaining},
        created_on=t, updated_on=t, insert=insert,
    )
    return log().append("cc", [event])[0]


def append_record(project: str, gid: str | None = None, *, action: str = "UPDATE") -> int:
    """Append one record event to the project's own space; returns its cursor."""
    event = record_event(
        project=project, data_type="records", gid=gid or str(uuid.uuid4()), action=action
    )
    return log().append(project, [event])[0]


def trim_below(space: str, cursor: int) -> int:
    """Trim the space so that its history starts at ``cursor``; returns the new floor.

    ``SyncLog.trim`` never cuts inside the newest minute that has events, and test events are
    all appended within a minute or two, so the minute marks are rewritten first to say that
    ``cursor`` is the first event of the current minute; the real trim then does the rest.
    """
    r = get_redis()
    minutes = [m for m in r.hkeys(keys.sync_marks(space)) if m.isdigit()]  # not "run"
    if minutes:
        r.hdel(keys.sync_marks(space), *minutes)
    r.hset(keys.sync_marks(space), str(int(time.time() // 60)), cursor)
    return log().trim(space, keep=1, keep_seconds=0)


# -- raw websocket helpers ----------------------------------------------------------------


async def open_ws(server: StreamServer, jwt: str | None = None, **kwargs: Any) -> ClientConnection:
    """Connect; with ``jwt``, authenticate by message and check the reply."""
    ws = await connect(url(server), max_size=None, compression=None, **kwargs)
    if jwt is not None:
        await ws.send(json.dumps({"op": "auth", "jwt": jwt}))
        reply = await recv(ws)
        assert reply["op"] == "auth" and reply["ok"] is True, reply
    return ws


async def recv(ws: ClientConnection, timeout: float = WAIT) -> dict[str, Any]:
    async with asyncio.timeout(timeout):
        return json.loads(await ws.recv())


async def request(ws: ClientConnection, msg: dict[str, Any]) -> dict[str, Any]:
    """Send a request and return the next non-sync message (its reply)."""
    await ws.send(json.dumps(msg))
    while True:
        reply = await recv(ws)
        if reply.get("op") != "sync":
            return reply


async def subscribe(ws: ClientConnection, project: str, **fields: Any) -> dict[str, Any]:
    reply = await request(ws, {"op": "subscribe", "project": project, **fields})
    assert reply["op"] == "subscribed", reply
    return reply


async def events(ws: ClientConnection, n: int, timeout: float = WAIT) -> list[dict[str, Any]]:
    """Receive sync frames until ``n`` events arrived; other messages fail the test."""
    out: list[dict[str, Any]] = []
    async with asyncio.timeout(timeout):
        while len(out) < n:
            msg = json.loads(await ws.recv())
            assert msg["op"] == "sync", msg
            out.extend(msg["sync"])
    assert len(out) == n, out
    return out


async def until_closed(ws: ClientConnection, timeout: float = WAIT) -> list[dict[str, Any]]:
    """Read everything until the server closes the connection; returns what was read."""
    out: list[dict[str, Any]] = []
    async with asyncio.timeout(timeout):
        async for raw in ws:
            out.append(json.loads(raw))
    return out
