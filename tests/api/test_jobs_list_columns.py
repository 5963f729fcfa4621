"""``jobs/list`` reads job rows without their selection (``params``), actor and result
payload: a project whose jobs carry the largest selections lists them at the cost of their
public state only."""

from __future__ import annotations

import re
import time
import uuid
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import insert

from models.engine import get_engine, get_write_engine
from models.jobs import Job
from models.seed import SeedResult
from tests.api.test_unicat import auth, post
from tests.plans import captured

#: A column list that names one of the heavy columns of the job table.
HEAVY = re.compile(r"\bjob\.(params|actor|result_payload)\b")


def add_huge_job(project: str) -> str:
    """A finished job row whose params hold 200,000 gids (some 8 MB of JSON)."""
    token, now = str(uuid.uuid4()), time.time()
    with get_write_engine().begin() as conn:
        conn.execute(insert(Job.__table__).values(
            token=token, project_gid=project, job="bulk_delete_records", status="done",
            info={"total": 0, "remaining": 0}, actor={"type": "user", "id": "x" * 1000},
            params={"selection": [str(uuid.uuid4()) for _ in range(200_000)]},
            result_payload={"blob": "y" * 100_000}, created_on=now, updated_on=now))
    return token


def heavy_selects(statements: list[tuple[str, Any]]) -> list[str]:
    return [sql for sql, _ in statements if HEAVY.search(sql)]


def test_jobs_list_does_not_select_params(client: TestClient, seeded: SeedResult):
    """The statements behind ``jobs/list`` select none of ``params``, ``actor`` and
    ``result_payload``; the job with a huge selection is listed with its public state."""
    project, jwt = auth(client, seeded)
    token = add_huge_job(project)
    with captured(get_engine()) as cap:
        r = post(client, f"/api/p/{project}/jobs/list", jwt, {})
    assert r.status_code == 200, r.text[:300]
    listed = {j["token"]: j for j in r.json()["result"]["jobs"]}
    assert listed[token]["status"] == "done" and "params" not in listed[token]
    assert any(re.search(r"\bFROM job\b", sql) for sql, _ in cap.statements)
    assert heavy_selects(cap.statements) == []
