"""Plone ``GET @history`` answers at most ``HISTORY_LIMIT`` (1,000) entries, the newest, as
a bare array: a record with a longer history does not load it all."""

from __future__ import annotations

import time

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import insert

from api.plone.routes import HISTORY_LIMIT
from models.engine import get_write_engine
from models.seed import SeededProject
from models.versions import WorkflowEntry
from tests.api.dialects import bearer, history_record

pytestmark = pytest.mark.services


def test_history_is_capped_to_the_newest_entries(client: TestClient,
                                                 project: SeededProject) -> None:
    """With 1,100 workflow entries newer than its three versions, the record's @history is
    the 1,000 newest workflow entries, newest first."""
    rec = history_record(project)
    now = time.time() + 3600  # newer than the seeded versions
    extra = HISTORY_LIMIT + 100
    with get_write_engine().begin() as conn:
        conn.execute(insert(WorkflowEntry.__table__), [
            {"record_id": rec.id, "action": "publish", "review_state": "published",
             "actor": {}, "time": now + i, "comment": f"entry {i}"} for i in range(extra)])
    r = client.get(f"/plone/p/{project.gid}/{rec.gid}/@history",
                   headers=bearer(project.api_key))
    assert r.status_code == 200, r.text[:300]
    entries = r.json()
    assert isinstance(entries, list) and len(entries) == HISTORY_LIMIT
    assert [e["comments"] for e in entries] == [
        f"entry {i}" for i in range(extra - 1, extra - 1 - HISTORY_LIMIT, -1)]
    assert {e["type"] for e in entries} == {"workflow"}


def test_capped_history_keeps_the_newest_of_versions_and_workflow(
        client: TestClient, project: SeededProject) -> None:
    """With 1,100 workflow entries older than its three versions, the cap keeps the three
    versions first, then the 997 newest workflow entries."""
    rec = history_record(project)
    extra = HISTORY_LIMIT + 100
    with get_write_engine().begin() as conn:
        conn.execute(insert(WorkflowEntry.__table__), [
            {"record_id": rec.id, "action": "publish", "review_state": "published",
             "actor": {}, "time": 1.0 + i, "comment": f"entry {i}"} for i in range(extra)])
    entries = client.get(f"/plone/p/{project.gid}/{rec.gid}/@history",
                         headers=bearer(project.api_key)).json()
    assert len(entries) == HISTORY_LIMIT
    assert [e["version"] for e in entries[:3]] == [2, 1, 0]
    assert [e["comments"] for e in entries[3:]] == [
        f"entry {i}" for i in range(extra - 1, extra - 1 - (HISTORY_LIMIT - 3), -1)]
