"""Paged reads in the Unicat dialect: `records/bulk/get` (cursor paging over a selection)
and `records/search` (relevance order, page.top/page.size)."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy import select

from models import Record, RecordDeletion
from models.engine import get_engine
from models.seed import SeedResult
from tests.api.test_unicat import auth, post
from tests.worker.helpers import PUBLIC_STATUS


def test_bulk_get_pages_through_the_whole_selection(client: TestClient, seeded: SeedResult):
    """Following page.cursor yields every selected live record once, in selection order,
    and the cursor is null at the end."""
    project, jwt = auth(client, seeded)
    p = seeded.projects[0]
    selection = [p.heads[3], {"children": p.root, "exclude": [p.heads[0]]}, p.heads[3]]
    seen: list[str] = []
    cursor = None
    sizes = set()
    while True:
        body = {"selection": selection, "page.size": 3}
        if cursor:
            body["page.cursor"] = cursor
        r = post(client, f"/api/p/{project}/records/bulk/get", jwt, body).json()
        assert r["success"], r
        res = r["result"]
        sizes.add(res["records.size"])
        assert set(res["records"]) == set(r["data"]["records"])
        seen += res["records"]
        cursor = res["page.cursor"]
        if cursor is None:
            break
    expected = [p.heads[3]] + [h for h in p.heads[:9] if h not in (p.heads[0], p.heads[3])]
    assert seen == expected
    assert sizes == {len(expected)}


def test_bulk_get_reads_live_records_only(client: TestClient, seeded: SeedResult):
    """A deleted record named by plain gid is not read, like the deleted children of a
    children entry (reads look at live records, SPEC §4)."""
    project, jwt = auth(client, seeded)
    p = seeded.projects[0]
    with get_engine().connect() as conn:
        status = dict(conn.execute(
            select(Record.gid, PUBLIC_STATUS)
            .outerjoin(RecordDeletion, RecordDeletion.record_id == Record.id)
            .where(Record.gid.in_(p.heads))).all())
    deleted = [h for h in p.heads if status[h] == "deleted"]
    live = [h for h in p.heads if status[h] != "deleted"]
    assert deleted and live
    body = {"selection": [deleted[0], live[0], {"children": p.root}]}
    res = post(client, f"/api/p/{project}/records/bulk/get", jwt, body).json()["result"]
    assert res["records"] == live and res["records.size"] == len(live)


def test_bulk_get_bad_cursor_and_selection_are_1006(client: TestClient, seeded: SeedResult):
    """A forged cursor or a malformed selection answers 1006."""
    project, jwt = auth(client, seeded)
    for body in ({"selection": [seeded.projects[0].root], "page.cursor": "garbage"},
                 {"selection": {"not": "a list"}}):
        r = post(client, f"/api/p/{project}/records/bulk/get", jwt, body)
        assert r.status_code == 422 and r.json()["result"]["code"] == 1006


def test_search_finds_created_and_edited_records(client: TestClient, seeded: SeedResult):
    """A record created or renamed through the API is found by `records/search` at once."""
    project, jwt = auth(client, seeded)
    root = seeded.projects[0].root
    gid = post(client, f"/api/p/{project}/records/create", jwt,
               {"parent": root, "title": {"en": "Zeppelin hangar"}}).json()["result"]["record"]
    found = post(client, f"/api/p/{project}/records/search", jwt,
                 {"language": "en", "q": "zeppel"}).json()["result"]
    assert found["records"] == [gid] and found["records.size"] == 1
    post(client, f"/api/p/{project}/records/update", jwt,
         {"record": gid, "title": {"en": "Airship hangar"}})
    gone = post(client, f"/api/p/{project}/records/search", jwt,
                {"language": "en", "q": "zeppelin"}).json()["result"]
    assert gone["records"] == []
    again = post(client, f"/api/p/{project}/records/search", jwt,
                 {"language": "en", "q": "+airship hangar"}).json()["result"]
    assert again["records"] == [gid]


def test_search_pages_and_rejects_bad_queries(client: TestClient, seeded: SeedResult):
    """page.top/page.size page through the result; a bad q answers 1006."""
    project, jwt = auth(client, seeded)
    first = post(client, f"/api/p/{project}/records/search", jwt,
                 {"language": "en", "q": "lighthouse", "page.size": 5}).json()["result"]
    assert len(first["records"]) == 5 and first["records.size"] > 5
    second = post(client, f"/api/p/{project}/records/search", jwt,
                  {"language": "en", "q": "lighthouse", "page.size": 5,
                   "page.top": 5}).json()["result"]
    assert not set(first["records"]) & set(second["records"])
    bad = post(client, f"/api/p/{project}/records/search", jwt,
               {"language": "en", "q": '"unbalanced'})
    assert bad.status_code == 422 and bad.json()["result"]["code"] == 1006


def test_children_pages_in_channel_and_ordering_as_a_children_entry_selects(
        client: TestClient, seeded: SeedResult):
    """`records/children` with a channel and an ordering pages (page.top, page.size) through
    exactly the records, in exactly the order, that the same children entry selects."""
    project, jwt = auth(client, seeded)
    p = seeded.projects[0]
    init = post(client, f"/api/p/{project}/init", jwt,
                {}).json()["data"]["cc.projects"][project]["options"]
    channel = next(k for k in init["channels"] if k != "__all__")
    for ordering in init["orderings"]:
        head = p.heads[0]
        entry = {"children": head, "channel": channel, "ordering": ordering}
        want = post(client, f"/api/p/{project}/records/bulk/get", jwt,
                    {"selection": [entry]}).json()["result"]["records"]
        got: list[str] = []
        for top in range(0, 12, 2):
            res = post(client, f"/api/p/{project}/records/children", jwt,
                       {"record": head, "channel": channel, "ordering": ordering,
                        "page.top": top, "page.size": 2}).json()["result"]
            assert res["children.size"] == len(want)
            got += res["children"]
        assert got == want and 0 < len(want) < 9
