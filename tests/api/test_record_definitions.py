"""Extended definitions through ``records/definition/…`` in the Unicat dialect
(``api/unicat/record_definitions.py`` over ``models/extended.py``)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from bulkjobs.connections import get_synclog
from models.engine import get_engine
from models.seed import SeedResult
from tests.api.test_records_edit import versions
from tests.api.test_unicat import auth, post

pytestmark = pytest.mark.services


def schema_rows(project: str) -> dict[str, Any]:
    with get_engine().connect() as conn:
        return {r.gid: r for r in conn.execute(text(
            "SELECT gid, type, name, is_extended, is_working_copy, is_new, original, classes "
            "FROM schema_item WHERE project_gid = :p"), {"p": project})}


def definition_of(record: str) -> str:
    with get_engine().connect() as conn:
        return str(conn.execute(text("SELECT definition FROM record WHERE gid = :g"),
                                {"g": record}).scalar_one())


def named(rows: dict[str, Any], type_: str, name: str) -> str:
    return next(g for g, r in rows.items() if (r.type, r.name) == (type_, name)
                and not r.is_extended)


def test_adding_a_class_extends_the_records_definition_once(client: TestClient,
                                                             seeded: SeedResult):
    """The first class added gives the record a private working copy of its definition
    (``is_extended``, ``original`` the definition); the next one changes that same copy; the
    shared definition stays as it was; each change is a record version and is announced."""
    project, jwt = auth(client, seeded)
    head = seeded.projects[0].heads[0]
    rows = schema_rows(project)
    section, article, common = (named(rows, "definition", "section"),
                                named(rows, "class", "article"), named(rows, "class", "common"))
    assert definition_of(head) == section
    start = get_synclog().cursor(project)
    before = len(versions(head))
    r = post(client, f"/api/p/{project}/records/definition/classes/add", jwt,
             {"record": head, "class": article})
    assert r.status_code == 200, r.text
    extended = r.json()["result"]["definition"]
    item = r.json()["data"]["definitions"][extended]
    assert extended != section and definition_of(head) == extended
    assert (item["is_extended"], item["is_working_copy"], item["original"]) == (
        True, True, section)
    assert item["classes"] == [common, article]
    assert r.json()["data"]["records"][head]["definition"] == extended
    shared = schema_rows(project)[section].classes  # the shared definition, unchanged
    assert (json.loads(shared) if isinstance(shared, str) else shared) == [common]
    r = post(client, f"/api/p/{project}/records/definition/classes/remove", jwt,
             {"record": head, "class": common})
    assert r.json()["result"]["definition"] == extended
    assert r.json()["data"]["definitions"][extended]["classes"] == [article]
    assert len(versions(head)) == before + 2
    events = [(e.as_dict()["data_type"], e.as_dict()["action"], e.key)
              for e in get_synclog().read(project, start).events]
    assert events == [("definitions", "INSERT", extended), ("records", "UPDATE", head),
                      ("definitions", "UPDATE", extended), ("records", "UPDATE", head)]


def test_revert_puts_the_record_back_on_its_definition(client: TestClient, seeded: SeedResult):
    """revert removes the extended definition and the record uses the original again; a
    record whose definition is not extended cannot be reverted."""
    project, jwt = auth(client, seeded)
    head = seeded.projects[0].heads[1]
    rows = schema_rows(project)
    section = named(rows, "definition", "section")
    extended = post(client, f"/api/p/{project}/records/definition/classes/add", jwt,
                    {"record": head, "class": named(rows, "class", "article")}
                    ).json()["result"]["definition"]
    r = post(client, f"/api/p/{project}/records/definition/revert", jwt, {"record": head})
    assert r.status_code == 200, r.text
    assert r.json()["result"]["definition"] == section and definition_of(head) == section
    assert extended not in schema_rows(project)
    again = post(client, f"/api/p/{project}/records/definition/revert", jwt, {"record": head})
    assert again.status_code == 422 and again.json()["result"]["info"]["record"] == head


def test_extended_definitions_are_changed_through_their_record_only(client: TestClient,
                                                                    seeded: SeedResult):
    """definitions/modify refuses an extended definition; init data has it unless
    ``omit_extended_definitions`` is asked for."""
    project, jwt = auth(client, seeded)
    head = seeded.projects[0].heads[2]
    rows = schema_rows(project)
    extended = post(client, f"/api/p/{project}/records/definition/classes/add", jwt,
                    {"record": head, "class": named(rows, "class", "article")}
                    ).json()["result"]["definition"]
    r = post(client, f"/api/p/{project}/definitions/modify", jwt,
             {"definition": extended, "label": {"en": "Mine"}})
    assert r.status_code == 422
    full = post(client, f"/api/p/{project}/init", jwt, {}).json()["data"]["definitions"]
    lean = post(client, f"/api/p/{project}/init", jwt,
                {"omit_extended_definitions": True}).json()["data"]["definitions"]
    assert extended in full and extended not in lean
    assert set(lean) == set(full) - {extended}


def test_bad_class_changes_nothing(client: TestClient, seeded: SeedResult):
    """An unknown class, another project's class, or removing a class the definition does not
    have, is refused (1001) and leaves the record and the schema as they were."""
    project, jwt = auth(client, seeded)
    head = seeded.projects[0].heads[3]
    article = named(schema_rows(project), "class", "article")
    foreign = named(schema_rows(seeded.projects[1].gid), "class", "article")
    before = (definition_of(head), len(versions(head)), set(schema_rows(project)))
    for cls, verb in (("no-such-class", "add"), (foreign, "add"), (article, "remove")):
        r = post(client, f"/api/p/{project}/records/definition/classes/{verb}", jwt,
                 {"record": head, "class": cls})
        assert r.status_code == 422 and r.json()["result"]["code"] == 1001, r.text
        assert (definition_of(head), len(versions(head)), set(schema_rows(project))) == before
