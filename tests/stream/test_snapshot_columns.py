"""The ``subscribed`` snapshot reads job rows without their selection (``params``), actor and
result payload, and still lists every unfinished job of the project (SPEC §8)."""

from __future__ import annotations

import time
import uuid

import pytest
from sqlalchemy import insert

from models.engine import get_engine, get_write_engine
from models.jobs import Job
from tests.api.test_jobs_list_columns import heavy_selects
from tests.plans import captured
from tests.stream.conftest import jwt_for, open_ws, subscribe

pytestmark = pytest.mark.anyio


def _insert(project: str, status: str, *, huge: bool) -> str:
    token, now = str(uuid.uuid4()), time.time()
    selection = [str(uuid.uuid4()) for _ in range(200_000 if huge else 1)]
    with get_write_engine().begin() as conn:
        conn.execute(insert(Job.__table__).values(
            token=token, project_gid=project, job="bulk_delete_records", status=status,
            info={"total": len(selection), "remaining": len(selection)},
            actor={"type": "user", "id": "x"}, params={"selection": selection},
            created_on=now, updated_on=now))
    return token


async def test_snapshot_does_not_select_params(server, seeded):
    """Subscribing to a project (and to named jobs) selects none of ``params``, ``actor``
    and ``result_payload``; the snapshot holds every unfinished job, the one with 200,000
    gids included."""
    project = seeded.projects[0].gid
    huge = _insert(project, "processing", huge=True)
    small = _insert(project, "queued", huge=False)
    done = _insert(project, "done", huge=True)
    ws = await open_ws(server, jwt_for(seeded, 0))
    with captured(get_engine()) as cap:
        reply = await subscribe(ws, project)
        named = await subscribe(ws, project, jobs=[done])
    await ws.close()
    assert {j["token"] for j in reply["jobs"]} == {huge, small}
    assert {j["token"]: j["info"]["total"] for j in reply["jobs"]}[huge] == 200_000
    assert [j["token"] for j in named["jobs"]] == [done]
    assert any("FROM job" in sql for sql, _ in cap.statements)
    assert heavy_selects(cap.statements) == []
