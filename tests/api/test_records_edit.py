"""Single-record edits in the Unicat dialect: each writes a version or a workflow entry and
announces the change in the project's sync space."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from bulkjobs.connections import get_synclog
from models.engine import get_engine, get_write_engine
from models.seed import SeedResult, seed
from tests.api.test_unicat import auth, post


def versions(gid: str) -> list[tuple]:
    with get_engine().connect() as conn:
        return conn.execute(text(
            "SELECT v.number, v.is_current, v.is_published, v.snapshot FROM record_version v "
            "JOIN record r ON r.id = v.record_id WHERE r.gid = :g ORDER BY v.number"),
            {"g": gid}).all()


def workflow(gid: str) -> list[str]:
    with get_engine().connect() as conn:
        return conn.execute(text(
            "SELECT w.action FROM workflow_entry w JOIN record r ON r.id = w.record_id "
            "WHERE r.gid = :g ORDER BY w.id"), {"g": gid}).scalars().all()


def test_create_update_publish_write_history(client: TestClient, seeded: SeedResult):
    """create makes version 0; update merges and makes version 1; publish marks the current
    version published and adds a workflow entry; events go to the project space."""
    project, jwt = auth(client, seeded)
    start = get_synclog().cursor(project)
    r = post(client, f"/api/p/{project}/records/create", jwt,
             {"parent": seeded.projects[0].root, "title": {"en": "Fresh", "nl": "Vers"}})
    assert r.status_code == 200, r.text
    gid = r.json()["result"]["record"]
    rec = r.json()["data"]["records"][gid]
    assert rec["parent"] == seeded.projects[0].root and rec["treelevel"] == 1
    assert rec["path"] == [gid, seeded.projects[0].root] and rec["status"] == "draft"
    r = post(client, f"/api/p/{project}/records/update", jwt,
             {"record": gid, "title": {"nl": "Nieuw"}, "fields": {"en": {"summary": "text"}}})
    rec = r.json()["data"]["records"][gid]
    assert rec["title"] == {"en": "Fresh", "nl": "Nieuw"}
    assert rec["fields"]["en"]["summary"] == "text"
    post(client, f"/api/p/{project}/records/publish", jwt, {"record": gid})
    rows = versions(gid)
    assert [(n, cur, pub) for n, cur, pub, _ in rows] == [(0, False, False), (1, True, True)]
    assert workflow(gid) == ["publish"]
    events = get_synclog().read(project, start).events
    assert [(e.as_dict()["action"], e.key) for e in events] == [
        ("INSERT", gid), ("UPDATE", gid), ("UPDATE", gid)]
    root = post(client, f"/api/p/{project}/records/get", jwt,
                {"record": seeded.projects[0].root}).json()
    assert root["data"]["records"][seeded.projects[0].root]["childcount"] == 11


def test_single_delete_and_undelete(client: TestClient, seeded: SeedResult):
    """delete soft-deletes the subtree; undelete restores it; the root cannot be deleted."""
    project, jwt = auth(client, seeded)
    head = seeded.projects[0].heads[0]
    assert post(client, f"/api/p/{project}/records/delete", jwt, {"record": head}).status_code \
        == 200
    with get_engine().connect() as conn:
        deleted = conn.execute(text(
            "SELECT COUNT(*) FROM record_deletion WHERE deleted_root = (SELECT id FROM record "
            "WHERE gid = :g)"), {"g": head}).scalar_one()
    assert deleted == 100
    again = post(client, f"/api/p/{project}/records/delete", jwt, {"record": head})
    assert again.status_code == 422 and again.json()["result"]["info"]["reason"]
    ok = post(client, f"/api/p/{project}/records/undelete", jwt, {"record": head})
    assert ok.status_code == 200
    assert ok.json()["data"]["records"][head]["status"] != "deleted"
    with get_engine().connect() as conn:
        still = conn.execute(text(
            "SELECT COUNT(*) FROM record_deletion WHERE deleted_root = (SELECT id FROM record "
            "WHERE gid = :g)"), {"g": head}).scalar_one()
    assert still == 0
    assert workflow(head) == ["delete", "undelete"]
    root = post(client, f"/api/p/{project}/records/delete", jwt,
                {"record": seeded.projects[0].root})
    assert root.status_code == 422


@pytest.mark.parametrize("body, code", [
    ({"title": {"xx": "no such language"}}, 1001),
    ({"channels": ["no-such-channel"]}, 1001),
    ({"orderings": {"no-such-ordering": 1}}, 1001),
    ({"fields": {"en": {"price": 3}}}, 1001),  # a field of articles, not of this section
    ({"title": "not an object"}, 400),
])
def test_invalid_updates_are_rejected_and_change_nothing(client: TestClient,
                                                          seeded: SeedResult, body, code):
    """Invalid content is rejected with a clear code; no version is written."""
    project, jwt = auth(client, seeded)
    head = seeded.projects[0].heads[0]
    before = versions(head)
    r = post(client, f"/api/p/{project}/records/update", jwt, {"record": head, **body})
    assert r.json()["result"]["code"] == code
    assert r.status_code == (422 if code == 1001 else 400)
    assert versions(head) == before


def test_edit_of_unknown_or_foreign_record_is_422(client: TestClient, seeded: SeedResult):
    """Records of another project are as unknown as gids that do not exist."""
    project, jwt = auth(client, seeded)
    for gid in ("unknown", seeded.projects[1].heads[0]):
        r = post(client, f"/api/p/{project}/records/update", jwt,
                 {"record": gid, "title": {"en": "x"}})
        assert r.status_code == 422


def test_unpublish_returns_to_draft_and_keeps_the_history(client: TestClient,
                                                          seeded: SeedResult):
    """unpublish makes a published record a draft again: no version stays published, the
    versions are kept, a workflow entry and a project-space event are written."""
    project, jwt = auth(client, seeded)
    gid = post(client, f"/api/p/{project}/records/create", jwt,
               {"parent": seeded.projects[0].root, "title": {"en": "Short-lived"}}
               ).json()["result"]["record"]
    post(client, f"/api/p/{project}/records/publish", jwt, {"record": gid})
    start = get_synclog().cursor(project)
    r = post(client, f"/api/p/{project}/records/unpublish", jwt, {"record": gid})
    assert r.status_code == 200, r.text
    assert r.json()["data"]["records"][gid]["status"] == "draft"
    assert [(n, cur, pub) for n, cur, pub, _ in versions(gid)] == [(0, True, False)]
    assert workflow(gid) == ["publish", "unpublish"]
    events = get_synclog().read(project, start).events
    assert [(e.as_dict()["action"], e.key) for e in events] == [("UPDATE", gid)]


def test_links_show_canonical_and_backlinks_and_take_no_children(client: TestClient,
                                                                  services: object):
    """A link reads with ``is_link`` and its target's gid as ``canonical``; the target lists
    it in ``backlinks``; creating a child under the link is refused and writes nothing."""
    with get_write_engine().begin() as conn:
        demo = seed(conn, records=10_000, projects=1, seed_value=4)
    project = demo.projects[0]
    project_gid, jwt = auth(client, demo)
    with get_engine().connect() as conn:
        link, target = conn.execute(text(
            "SELECT l.gid, t.gid FROM record l JOIN record t ON t.id = l.canonical_id "
            "WHERE l.project_gid = :p AND l.is_link"), {"p": project.gid}).one()
    got = post(client, f"/api/p/{project_gid}/records/get", jwt,
               {"records": [link, target]}).json()["data"]["records"]
    assert (got[link]["is_link"], got[link]["canonical"]) == (True, target)
    assert (got[target]["is_link"], got[target]["canonical"]) == (False, target)
    assert got[target]["backlinks"] == [link]
    r = post(client, f"/api/p/{project_gid}/records/create", jwt,
             {"parent": link, "title": {"en": "Under a link"}})
    assert r.status_code == 422 and r.json()["result"]["info"]["parent"] == link
    assert "link" in r.json()["result"]["message"]
    with get_engine().connect() as conn:
        assert conn.execute(text(
            "SELECT COUNT(*) FROM record WHERE parent_id = (SELECT id FROM record "
            "WHERE gid = :g)"), {"g": link}).scalar_one() == 0
