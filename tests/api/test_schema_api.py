"""Schema endpoints of the Unicat dialect over HTTP (in-process ASGI client, real database and
Redis): create/get/modify shapes, errors in the envelope, ``schema/bulk/get`` paging, and the
four schema job endpoints."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, func, select

from bulkjobs import keys
from bulkjobs.connections import get_synclog
from models import Job, SchemaItem
from models.engine import get_engine, get_write_engine
from models.seed import SeedResult, seed
from tests.api.test_unicat import auth, post

pytestmark = pytest.mark.services

JOB_ENDPOINTS = {
    "commit": "bulk_commit_schema_items", "revert": "bulk_revert_schema_items",
    "save_as_new": "bulk_save_as_new_schema_items", "copy": "bulk_copy_schema_items",
}


@pytest.fixture
def small(services: Engine) -> SeedResult:
    """Two projects with the seeded schema and a handful of records."""
    with get_write_engine().begin() as conn:
        return seed(conn, records=20, projects=2, seed_value=11)


def schema_items(project_gid: str) -> dict[str, Any]:
    with get_engine().connect() as conn:
        return {r.gid: r for r in conn.execute(select(SchemaItem.__table__).where(
            SchemaItem.__table__.c.project_gid == project_gid))}


def named(project_gid: str, type_: str, name: str) -> Any:
    [row] = [r for r in schema_items(project_gid).values() if r.type == type_
             and r.name == name and not r.is_new and not r.is_working_copy]
    return row


def jobs_count() -> int:
    with get_engine().connect() as conn:
        return int(conn.execute(select(func.count()).select_from(Job)).scalar_one())


def project_events(project: str, after: int) -> list[tuple[str, str, str]]:
    return [(e.as_dict()["action"], e.as_dict()["data_type"], e.key)
            for e in get_synclog().read(project, after).events]


def test_definition_create_answers_gid_and_items(client: TestClient, small: SeedResult):
    """`definitions/create` answers the new definition and its new layout in the envelope,
    renews the JWT and announces both in the project space."""
    project, jwt = auth(client, small)
    start = get_synclog().cursor(project)
    r = post(client, f"/api/p/{project}/definitions/create", jwt,
             {"name": "chapter", "label": {"en": "Chapter"}, "titlefield": None})
    assert r.status_code == 200 and r.headers["authorization"]
    body = r.json()
    gid, layout = body["result"]["definition"], body["result"]["layout"]
    assert body["success"] is True and set(body["data"]) == {"definitions", "layouts"}
    d = body["data"]["definitions"][gid]
    assert (d["gid"], d["name"], d["label"], d["is_new"], d["is_working_copy"]) == (
        gid, "chapter", {"en": "Chapter"}, True, False)
    assert d["layout"] == layout and d["original"] is None and d["classes"] == []
    assert body["data"]["layouts"][layout]["is_new"] is True
    assert project_events(project, start) == [("INSERT", "definitions", gid),
                                              ("INSERT", "layouts", layout)]


def test_modify_committed_answers_working_copy(client: TestClient, small: SeedResult):
    """`definitions/modify` of a committed definition answers its working copy and the
    layout copy; a second modify answers the same copy and announces an UPDATE."""
    project, jwt = auth(client, small)
    article = named(project, "definition", "article")
    start = get_synclog().cursor(project)
    r = post(client, f"/api/p/{project}/definitions/modify", jwt,
             {"definition": article.gid, "label": {"nl": "Artikel"}})
    body = r.json()
    copy, layout = body["result"]["definition"], body["result"]["layout"]
    assert r.status_code == 200 and copy != article.gid
    d = body["data"]["definitions"][copy]
    assert d["is_working_copy"] is True and d["original"] == article.gid
    assert d["label"] == {"en": "Article", "nl": "Artikel"} and d["layout"] == layout
    assert body["data"]["layouts"][layout]["original"] == article.layout
    again = post(client, f"/api/p/{project}/definitions/modify", jwt,
                 {"definition": article.gid, "name": "story"}).json()
    assert again["result"]["definition"] == copy
    assert again["data"]["definitions"][copy]["name"] == "story"
    assert project_events(project, start) == [
        ("INSERT", "definitions", copy), ("INSERT", "layouts", layout),
        ("UPDATE", "definitions", copy)]
    assert schema_items(project)[article.gid].name == "article"


def test_classes_fields_layouts_endpoints(client: TestClient, small: SeedResult):
    """Classes (keyed `class`), fields and layouts are created, modified and read back in
    their own `data` keys."""
    project, jwt = auth(client, small)
    cls = named(project, "class", "article")
    r = post(client, f"/api/p/{project}/classes/modify", jwt,
             {"class": cls.gid, "label": {"en": "Articles"}}).json()
    copy = r["result"]["class"]
    assert r["data"]["classes"][copy]["original"] == cls.gid
    assert r["data"]["classes"][copy]["fields"] == cls.fields
    f = post(client, f"/api/p/{project}/fields/create", jwt,
             {"name": "weight__kg", "type": "number", "unit": "kg"}).json()
    fgid = f["result"]["field"]
    assert set(f["result"]) == {"field"}
    assert f["data"]["fields"][fgid]["unit"] == "kg" and f["data"]["fields"][fgid]["is_new"]
    lay = post(client, f"/api/p/{project}/layouts/create", jwt, {"root": "r1"}).json()
    lgid = lay["result"]["layout"]
    lay2 = post(client, f"/api/p/{project}/layouts/modify", jwt,
                {"layout": lgid, "components": {"r1": {"type": "vertical"}}}).json()
    assert lay2["result"]["layout"] == lgid
    assert lay2["data"]["layouts"][lgid]["components"] == {"r1": {"type": "vertical"}}
    got = post(client, f"/api/p/{project}/classes/get", jwt, {"classes": [copy, cls.gid]})
    assert got.json()["result"]["classes"] == [copy, cls.gid]
    one = post(client, f"/api/p/{project}/fields/get", jwt, {"field": fgid}).json()
    assert one["result"] == {"field": fgid} and list(one["data"]["fields"]) == [fgid]


def test_get_single_and_many(client: TestClient, small: SeedResult):
    """`get` answers one gid as `definition`, many as `definitions` (unknown ones left out);
    an unknown single gid is 422 and no gid at all is 400."""
    project, jwt = auth(client, small)
    a, b = named(project, "definition", "article"), named(project, "definition", "base")
    many = post(client, f"/api/p/{project}/definitions/get", jwt,
                {"definitions": [b.gid, str(uuid.uuid4()), a.gid]}).json()
    assert many["result"] == {"definitions": [b.gid, a.gid]}
    assert set(many["data"]["definitions"]) == {a.gid, b.gid}
    assert many["data"]["definitions"][b.gid]["is_base"] is True
    missing = post(client, f"/api/p/{project}/definitions/get", jwt,
                   {"definition": str(uuid.uuid4())})
    assert missing.status_code == 422 and missing.json()["result"]["code"] == 422
    none = post(client, f"/api/p/{project}/definitions/get", jwt, {})
    assert none.status_code == 400 and none.json()["success"] is False


@pytest.mark.parametrize(("path", "body", "code"), [
    pytest.param("fields/create", {"name": "1bad"}, 1001, id="bad-name"),
    pytest.param("fields/create", {"name": "body"}, 1001, id="name-in-use"),
    pytest.param("definitions/create", {"classes": ["nope"]}, 1001, id="unknown-class"),
    pytest.param("definitions/create", {"label": {"xx": "?"}}, 1001, id="unknown-language"),
    pytest.param("fields/modify", {"field": "nope", "name": "x"}, 422, id="unknown-gid"),
    pytest.param("fields/create", {"name": 5}, 400, id="wrong-json-type"),
])
def test_edit_errors_in_the_envelope(client: TestClient, small: SeedResult, path: str,
                                     body: dict[str, Any], code: int):
    """Validation errors are 1001 (HTTP 422), unknown gids 422, wrong JSON types 400; nothing
    is written."""
    project, jwt = auth(client, small)
    before = len(schema_items(project))
    r = post(client, f"/api/p/{project}/{path}", jwt, body)
    assert r.status_code == (400 if code == 400 else 422)
    assert r.json()["success"] is False and r.json()["result"]["code"] == code
    assert r.json()["data"] == {}
    assert len(schema_items(project)) == before


def test_bulk_get_pages_to_the_end(client: TestClient, small: SeedResult):
    """`schema/bulk/get` pages through the selection with `page.cursor` until it is null,
    skipping unknown and foreign gids, with the total in `schema_items.size`."""
    project, jwt = auth(client, small)
    mine = sorted(schema_items(project).values(), key=lambda r: r.id)
    foreign = next(iter(schema_items(small.projects[1].gid)))
    selection = [str(uuid.uuid4()), *[r.gid for r in mine[:4]], foreign,
                 *[r.gid for r in mine[4:]]]
    seen: list[dict[str, str]] = []
    cursor = None
    while True:
        req: dict[str, Any] = {"selection": selection, "page.size": 4}
        if cursor is not None:
            req["page.cursor"] = cursor
        r = post(client, f"/api/p/{project}/schema/bulk/get", jwt, req)
        assert r.status_code == 200, r.text
        result, data = r.json()["result"], r.json()["data"]
        assert result["schema_items.size"] == len(mine)
        assert set(data) == {"definitions", "classes", "fields", "layouts"}
        for entry in result["schema_items"]:
            plural = {"definition": "definitions", "class": "classes", "field": "fields",
                      "layout": "layouts"}[entry["type"]]
            assert entry["item"] in data[plural]
        seen += result["schema_items"]
        cursor = result["page.cursor"]
        if cursor is None:
            break
    assert seen == [{"type": r.type, "item": r.gid} for r in mine]
    whole = post(client, f"/api/p/{project}/schema/bulk/get", jwt,
                 {"selection": selection}).json()["result"]
    assert len(whole["schema_items"]) == len(mine) and whole["page.cursor"] is None
    too_big = post(client, f"/api/p/{project}/schema/bulk/get", jwt,
                   {"selection": selection, "page.size": 1001})
    assert too_big.status_code == 400


@pytest.mark.parametrize("path", ["schema/bulk/get", *(f"schema/bulk/{e}" for e in JOB_ENDPOINTS)])
def test_children_entry_is_1006_and_queues_nothing(client: TestClient, small: SeedResult,
                                                   path: str):
    """A children entry in a schema selection answers 422/1006 naming the entry; no job is
    queued and no event appended."""
    project, jwt = auth(client, small)
    before = get_synclog().cursor(keys.CC_SPACE)
    r = post(client, f"/api/p/{project}/{path}", jwt,
             {"selection": [named(project, "field", "body").gid,
                            {"children": small.projects[0].root}]})
    body = r.json()
    assert r.status_code == 422 and body["result"]["code"] == 1006
    assert body["result"]["info"]["entry"] == 1 and body["result"]["info"]["reason"]
    assert jobs_count() == 0 and get_synclog().cursor(keys.CC_SPACE) == before


@pytest.mark.parametrize("selection", ["nope", [1], None])
def test_malformed_selection_queues_nothing(client: TestClient, small: SeedResult, selection):
    """A selection that is not a list of gids is rejected (1006, or 400 when missing) and
    nothing is queued."""
    project, jwt = auth(client, small)
    body = {} if selection is None else {"selection": selection}
    r = post(client, f"/api/p/{project}/schema/bulk/commit", jwt, body)
    assert r.status_code in (400, 422) and r.json()["success"] is False
    assert r.json()["result"]["code"] in (400, 1006)
    assert jobs_count() == 0


@pytest.mark.parametrize(("endpoint", "job"), list(JOB_ENDPOINTS.items()))
def test_job_endpoints_answer_a_token(client: TestClient, small: SeedResult, endpoint: str,
                                      job: str):
    """Each schema job endpoint answers a job token at once, with empty data, and queues the
    named job with the selection."""
    project, jwt = auth(client, small)
    gid = named(project, "definition", "article").gid
    r = post(client, f"/api/p/{project}/schema/bulk/{endpoint}", jwt, {"selection": [gid]})
    body = r.json()
    assert r.status_code == 200 and body["data"] == {}
    token = body["result"]["job.token"]
    got = post(client, f"/api/p/{project}/jobs/get", jwt, {"job": token}).json()
    assert got["result"]["job"]["job"] == job and got["result"]["job"]["status"] == "queued"
    with get_engine().connect() as conn:
        params = conn.execute(select(Job.__table__.c.params).where(
            Job.__table__.c.token == token)).scalar_one()
    assert params == {"selection": [gid]}


def test_schema_search_pages_with_top_and_size(client: TestClient, small: SeedResult):
    """`schema/search` finds items by filter and `q`, pages with `page.top`/`page.size`, and
    finds nothing with neither `q` nor `filter`; a bad filter is 1006."""
    project, jwt = auth(client, small)
    url = f"/api/p/{project}/schema/search"
    fields = post(client, url, jwt, {"language": "en",
                                     "filter": ["type", "is", "field"]}).json()["result"]
    expected = {r.gid for r in schema_items(project).values() if r.type == "field"}
    assert {e["item"] for e in fields["schema_items"]} == expected
    assert fields["schema_items.size"] == len(expected) == 3
    pages = [post(client, url, jwt, {"language": "en", "filter": ["type", "is", "field"],
                                     "page.top": top, "page.size": 2}).json()["result"]
             for top in (0, 2)]
    assert [len(p["schema_items"]) for p in pages] == [2, 1]
    assert pages[0]["schema_items"] + pages[1]["schema_items"] == fields["schema_items"]
    named_article = post(client, url, jwt, {"language": "en", "q": "+article"}).json()
    assert {e["type"] for e in named_article["result"]["schema_items"]} == {
        "definition", "class", "layout"}
    empty = post(client, url, jwt, {"language": "en"}).json()["result"]
    assert empty == {"schema_items": [], "schema_items.size": 0}
    bad = post(client, url, jwt, {"language": "en", "filter": ["bogus", "is", 1]})
    assert bad.status_code == 422 and bad.json()["result"]["code"] == 1006


def test_bulk_get_with_a_search_entry(client: TestClient, small: SeedResult):
    """A search entry in `schema/bulk/get` stands for its results minus its excludes, after
    the plain gids before it and without repeating them."""
    project, jwt = auth(client, small)
    body = named(project, "field", "body")
    price = named(project, "field", "price")
    summary = named(project, "field", "summary")
    base = named(project, "definition", "base")
    r = post(client, f"/api/p/{project}/schema/bulk/get", jwt, {"selection": [
        price.gid, {"search": {"language": "en", "filter": ["type", "is", "field"]},
                    "exclude": [body.gid]}, base.gid]}).json()["result"]
    assert [e["item"] for e in r["schema_items"]] == [price.gid, summary.gid, base.gid]
    assert r["schema_items.size"] == 3
