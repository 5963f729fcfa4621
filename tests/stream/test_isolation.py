"""Project isolation at scale: 50 projects, each with its own member watching it, both by an
explicit subscription and by ``"*"``, while every project has job and record events.  Real
sockets, real Redis, the real test database."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import pytest
from sqlmodel import Session
from websockets.asyncio.client import ClientConnection

from bulkjobs import tokens
from models.auth import Member, Project, User
from models.engine import get_engine
from stream.server import StreamServer
from tests.stream.conftest import WAIT, append_job, append_record, open_ws, request, subscribe

pytestmark = pytest.mark.anyio

PROJECTS = 50
ROUNDS = 3


def projects_with_one_member_each(n: int) -> list[tuple[str, str]]:
    """``n`` projects, each with a user who is a member of it only: ``(project, user)``."""
    out = [(str(uuid.uuid4()), str(uuid.uuid4())) for _ in range(n)]
    with Session(get_engine()) as session:
        for i, (project, user) in enumerate(out):
            session.add(Project(gid=project, name=f"isolated {i}"))
            session.add(User(gid=user, username=f"isolated-{i}-{user[:8]}"))
        session.flush()
        for project, user in out:
            session.add(Member(project_gid=project, user_gid=user))
        session.commit()
    return out


async def collect(ws: ClientConnection, until: set[tuple[str, int]]) -> list[dict[str, Any]]:
    """Every event received until each ``(type, cursor)`` of ``until`` has arrived."""
    got: list[dict[str, Any]] = []
    missing = set(until)
    async with asyncio.timeout(WAIT * 3):
        while missing:
            msg = json.loads(await ws.recv())
            assert msg["op"] == "sync", msg
            got += msg["sync"]
            missing -= {(e["type"], e["cursor"]) for e in msg["sync"]}
    return got


def owner(event: dict[str, Any]) -> str:
    return str(event["data"]["project_gid"] if event["type"] == "cc" else event["type"])


async def test_fifty_projects_no_subscriber_gets_another_projects_event(services):
    """Each of 50 members, subscribed to its project and (on a second connection) to "*",
    gets exactly its project's job and record events, in order, and never one of the 49
    other projects; subscribing to another project is refused with 403."""
    pairs = projects_with_one_member_each(PROJECTS)
    async with StreamServer(host="127.0.0.1", port=0, block_ms=200) as server:
        explicit: list[ClientConnection] = []
        star: list[ClientConnection] = []
        for i, (project, user) in enumerate(pairs):
            jwt = tokens.issue(user)
            ws = await open_ws(server, jwt)
            await subscribe(ws, project)
            other = pairs[(i + 1) % PROJECTS][0]
            refused = await request(ws, {"op": "subscribe", "project": other})
            assert refused["op"] == "error" and refused["code"] == 403, refused
            explicit.append(ws)
            ws = await open_ws(server, jwt)
            await subscribe(ws, "*")
            star.append(ws)

        expected: dict[str, list[tuple[str, int]]] = {p: [] for p, _ in pairs}
        job_tokens = {p: str(uuid.uuid4()) for p, _ in pairs}
        for r in range(ROUNDS):  # interleaved: every project's events among everyone's
            for project, _ in pairs:
                expected[project].append(
                    ("cc", append_job(project, job_tokens[project], remaining=ROUNDS - r)))
                expected[project].append((project, append_record(project)))
        # Last, one more event of each kind per project: once a connection has both, every
        # event appended before them (of any project) has been routed.
        markers: dict[str, set[tuple[str, int]]] = {}
        for project, _ in pairs:
            markers[project] = {("cc", append_job(project, job_tokens[project],
                                                  status="done"))}
        for project, _ in pairs:
            markers[project].add((project, append_record(project)))
            expected[project] += sorted(markers[project], key=lambda m: m[0] != "cc")

        received = await asyncio.gather(*(
            collect(ws, markers[project])
            for (project, _), ws in [*zip(pairs, explicit, strict=True),
                                     *zip(pairs, star, strict=True)]
        ))
        for ws in explicit + star:
            await ws.close()

    for k, got in enumerate(received):
        project = pairs[k % PROJECTS][0]
        kind = "explicit" if k < PROJECTS else '"*"'
        foreign = [e for e in got if owner(e) != project]
        assert not foreign, f"{kind} subscriber of project {k % PROJECTS} got {foreign[:3]}"
        for space in ("cc", project):
            mine = [(e["type"], e["cursor"]) for e in got if e["type"] == space]
            assert mine == [m for m in expected[project] if m[0] == space], (kind, space)
