"""A single-record delete of a record that is deleted already — on its own or inside a
deleted subtree — is refused with 422 "already deleted" and writes nothing."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy import text

from models.engine import get_engine
from models.seed import SeedResult
from tests.api.test_unicat import auth, post


def _state() -> tuple[int, int, list[tuple]]:
    """Deletion rows, workflow entries and the delete entries' (record, job_token)."""
    with get_engine().connect() as conn:
        return (conn.execute(text("SELECT COUNT(*) FROM record_deletion")).scalar_one(),
                conn.execute(text("SELECT COUNT(*) FROM workflow_entry")).scalar_one(),
                conn.execute(text("SELECT record_id, job_token FROM workflow_entry "
                                  "WHERE action = 'delete' ORDER BY id")).all())


def _child(gid: str) -> str:
    with get_engine().connect() as conn:
        return str(conn.execute(text(
            "SELECT c.gid FROM record c JOIN record p ON p.id = c.parent_id "
            "WHERE p.gid = :g ORDER BY c.id LIMIT 1"), {"g": gid}).scalar_one())


def test_delete_of_a_deleted_record_or_subtree_member_is_422(client: TestClient,
                                                             seeded: SeedResult):
    """After a single delete of a head, deleting the head again or any record of its
    subtree answers 422 "already deleted" in the Unicat envelope and writes nothing."""
    project, jwt = auth(client, seeded)
    head = seeded.projects[0].heads[0]
    child = _child(head)
    grandchild = _child(child)
    assert post(client, f"/api/p/{project}/records/delete", jwt,
                {"record": head}).status_code == 200
    before = _state()
    assert [token for _, token in before[2]] == [None]  # a single edit names no job
    for gid in (head, child, grandchild):
        r = post(client, f"/api/p/{project}/records/delete", jwt, {"record": gid})
        assert r.status_code == 422, (gid, r.text)
        body = r.json()
        assert body["result"]["info"] == {"record": gid, "reason": "already deleted"}
        assert body["result"]["code"] and body["result"]["message"]
        assert _state() == before
