"""Single schema-item edits (``models/schema_editing.py``) against the real database: new
items, working copies (layouts included), in-place changes, validation, and the paged bulk
read."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from sqlalchemy import Engine, select, update
from sqlmodel import Session

from bulkjobs.errors import SelectionError, Unprocessable, ValidationError
from models import Project, SchemaItem
from models import schema_editing as se
from models.engine import get_engine, get_write_engine
from models.seed import SeedResult, seed
from models.selection import parse_selection

pytestmark = pytest.mark.services

items_t = SchemaItem.__table__


@pytest.fixture
def small(services: Engine) -> SeedResult:
    """Two projects with the seeded schema and a handful of records."""
    with get_write_engine().begin() as conn:
        return seed(conn, records=20, projects=2, seed_value=3)


@pytest.fixture
def project(small: SeedResult) -> Project:
    with Session(get_engine(), expire_on_commit=False) as session:
        found = session.get(Project, small.projects[0].gid)
        assert found is not None
        return found


def schema(project_gid: str) -> dict[str, Any]:
    """Every schema item of a project by gid."""
    with get_engine().connect() as conn:
        return {r.gid: r for r in conn.execute(
            select(items_t).where(items_t.c.project_gid == project_gid))}


def named(project_gid: str, type_: str, name: str) -> Any:
    """The committed item of that type and name."""
    [row] = [r for r in schema(project_gid).values() if r.type == type_ and r.name == name
             and se.is_committed(r)]
    return row


def create(project: Project, type_: str, **values: Any) -> se.EditResult:
    with get_write_engine().begin() as conn:
        return se.create(conn, project, type_=type_, values=values)


def modify(project: Project, type_: str, gid: str, **values: Any) -> se.EditResult:
    with get_write_engine().begin() as conn:
        return se.modify(conn, project, type_=type_, gid=gid, values=values)


# --- create --------------------------------------------------------------------------------


def test_create_definition_is_new_with_a_new_layout(project: Project) -> None:
    """A created definition is new, has the given content, and gets a new layout of its own."""
    common = named(project.gid, "class", "common")
    res = create(project, "definition", name="chapter", label={"en": "Chapter"},
                 classes=[common.gid], metadata={"k": 1})
    rows = schema(project.gid)
    d, layout = rows[res.gid], rows[res.layout or ""]
    assert (d.type, d.name, d.label, d.classes) == ("definition", "chapter",
                                                    {"en": "Chapter"}, [common.gid])
    assert d.is_new and not d.is_working_copy and d.original is None and d.layout == layout.gid
    assert layout.type == "layout" and layout.is_new and layout.original is None
    assert d.body["metadata"] == {"k": 1} and d.body["titlefield"] is None
    assert res.changes == (se.Change(d.gid, "definition", "INSERT"),
                           se.Change(layout.gid, "layout", "INSERT"))


def test_create_layout_choices_and_default_names(project: Project) -> None:
    """``layout: null`` means none, a committed layout is used as is, and unnamed items get
    numbered default names."""
    article_layout = named(project.gid, "layout", "article")
    none = create(project, "class", layout=None)
    given = create(project, "class", layout=article_layout.gid)
    rows = schema(project.gid)
    assert rows[none.gid].layout is None and none.layout is None
    assert rows[given.gid].layout == article_layout.gid
    assert (rows[none.gid].name, rows[given.gid].name) == ("unnamed_class", "unnamed_class_2")
    assert len([r for r in rows.values() if r.type == "layout"]) == 1


def test_create_field_defaults_and_body(project: Project) -> None:
    """A field keeps its type-specific properties in the body, with defaults filled in."""
    res = create(project, "field", name="weight__kg", type="number", is_localized=False,
                 unit="kg")
    f = schema(project.gid)[res.gid]
    assert f.body == {"type": "number", "options": {}, "is_localized": False,
                      "is_required": False, "initial": {}, "unit": "kg", "metadata": {}}
    assert res.layout is None


@pytest.mark.parametrize(("values", "key"), [
    pytest.param({"name": "9lives"}, "name", id="name-starts-with-digit"),
    pytest.param({"name": "has space"}, "name", id="name-with-space"),
    pytest.param({"name": "article"}, "name", id="name-held-by-committed"),
    pytest.param({"label": {"fr": "Chapitre"}}, "languages", id="unknown-language"),
    pytest.param({"classes": ["nope"]}, "classes", id="unknown-class"),
    pytest.param({"bogus": 1}, "keys", id="unknown-key"),
    pytest.param({"titlefield": 5}, "titlefield", id="titlefield-type"),
])
def test_create_validation_errors_are_1001(project: Project, values: dict[str, Any],
                                           key: str) -> None:
    """Invalid values raise ValidationError (1001) naming what is wrong, and write nothing."""
    before = len(schema(project.gid))
    with pytest.raises(ValidationError) as err:
        create(project, "definition", **values)
    assert err.value.code == 1001 and key in err.value.info
    assert len(schema(project.gid)) == before


def test_references_must_be_committed(project: Project) -> None:
    """A new class or a working copy cannot be referenced; the committed class can."""
    new_class = create(project, "class", name="fresh").gid
    article = named(project.gid, "class", "article")
    copy = modify(project, "class", article.gid, label={"en": "Art"}).gid
    for bad in (new_class, copy):
        with pytest.raises(ValidationError):
            create(project, "definition", classes=[bad])
    good = create(project, "definition", classes=[article.gid]).gid
    assert schema(project.gid)[good].classes == [article.gid]


def test_other_projects_items_are_unknown(small: SeedResult, project: Project) -> None:
    """Another project's items are neither found nor referenceable."""
    other = named(small.projects[1].gid, "definition", "article")
    with pytest.raises(Unprocessable):
        modify(project, "definition", other.gid, label={"en": "x"})
    with pytest.raises(ValidationError):
        create(project, "definition", layout=other.layout)


# --- modify --------------------------------------------------------------------------------


def test_modify_committed_definition_makes_working_copy_with_layout(project: Project) -> None:
    """Modifying a committed definition writes a working copy (label merged) pointing at a
    working copy of its layout; the original and its layout are unchanged."""
    before = schema(project.gid)
    article = named(project.gid, "definition", "article")
    res = modify(project, "definition", article.gid, label={"nl": "Artikel"}, name="story")
    after = schema(project.gid)
    copy = after[res.gid]
    assert res.gid != article.gid
    assert copy.is_working_copy and not copy.is_new and copy.original == article.gid
    assert copy.name == "story" and copy.label == {"en": "Article", "nl": "Artikel"}
    assert copy.classes == article.classes
    layout_copy = after[copy.layout]
    assert layout_copy.gid != article.layout and layout_copy.type == "layout"
    assert layout_copy.is_working_copy and layout_copy.original == article.layout
    assert layout_copy.body == before[article.layout].body
    assert after[article.gid] == before[article.gid]
    assert after[article.layout] == before[article.layout]
    assert set(after) - set(before) == {copy.gid, layout_copy.gid}
    assert res.layout == layout_copy.gid
    assert res.changes == (se.Change(copy.gid, "definition", "INSERT"),
                           se.Change(layout_copy.gid, "layout", "INSERT"))


def test_modify_again_changes_the_working_copy_in_place(project: Project) -> None:
    """A second modify — through the original's gid or the copy's — changes the same working
    copy; no second copy appears."""
    article = named(project.gid, "definition", "article")
    first = modify(project, "definition", article.gid, label={"en": "One"})
    count = len(schema(project.gid))
    second = modify(project, "definition", article.gid, label={"nl": "Twee"})
    third = modify(project, "definition", first.gid, metadata={"m": True})
    rows = schema(project.gid)
    assert first.gid == second.gid == third.gid and len(rows) == count
    assert rows[first.gid].label == {"en": "One", "nl": "Twee"}
    assert rows[first.gid].body["metadata"] == {"m": True}
    assert second.changes == (se.Change(first.gid, "definition", "UPDATE"),)
    assert rows[article.gid].label == {"en": "Article", "nl": "Article"}


def test_modify_new_item_in_place(project: Project) -> None:
    """A new item is changed in place and stays new (no working copy)."""
    res = create(project, "field", name="colour")
    count = len(schema(project.gid))
    again = modify(project, "field", res.gid, name="color", is_required=True)
    row = schema(project.gid)[res.gid]
    assert again.gid == res.gid and len(schema(project.gid)) == count
    assert row.is_new and not row.is_working_copy and row.original is None
    assert row.name == "color" and row.body["is_required"] is True


def test_modify_committed_field_copy_has_no_layout(project: Project) -> None:
    """A field's working copy copies only the field."""
    body = named(project.gid, "field", "body")
    res = modify(project, "field", body.gid, options={"multiline": True})
    copy = schema(project.gid)[res.gid]
    assert copy.original == body.gid and copy.layout is None and res.layout is None
    assert copy.body["options"] == {"multiline": True} and copy.body["type"] == "textline"


def test_owner_copy_shares_an_existing_layout_working_copy(project: Project) -> None:
    """When the layout already has a working copy, the owner's copy points at it instead of
    making a second one."""
    article = named(project.gid, "definition", "article")
    layout_copy = modify(project, "layout", article.layout, components={"x": {}}).gid
    res = modify(project, "definition", article.gid, label={"en": "A"})
    rows = schema(project.gid)
    assert rows[res.gid].layout == layout_copy
    assert [r.gid for r in rows.values() if r.original == article.layout] == [layout_copy]


def test_giving_a_layout_skips_the_layout_copy_and_drops_orphans(project: Project) -> None:
    """A modify that sets ``layout`` makes no layout copy; replacing a working copy's layout
    copy removes the now unused copy."""
    article = named(project.gid, "definition", "article")
    section = named(project.gid, "definition", "section")
    res = modify(project, "definition", section.gid, layout=article.layout)
    assert schema(project.gid)[res.gid].layout == article.layout
    copy = modify(project, "definition", article.gid, label={"en": "A"})
    orphan = copy.layout
    again = modify(project, "definition", copy.gid, layout=None)
    rows = schema(project.gid)
    assert rows[copy.gid].layout is None and orphan not in rows
    assert se.Change(orphan or "", "layout", "DELETE") in again.changes


def test_modify_name_rules(project: Project) -> None:
    """Renaming to a name another committed item holds is refused; keeping the original's
    name on its working copy is fine."""
    article = named(project.gid, "class", "article")
    with pytest.raises(ValidationError):
        modify(project, "class", article.gid, name="common")
    res = modify(project, "class", article.gid, name="article")
    assert schema(project.gid)[res.gid].name == "article"


@pytest.mark.parametrize("case", ["unknown", "wrong-type", "extended"])
def test_modify_unknown_or_extended_is_422(project: Project, case: str) -> None:
    """An unknown gid, a gid of another type and an extended definition answer 422."""
    article = named(project.gid, "definition", "article")
    gid = {"unknown": str(uuid.uuid4()), "wrong-type": article.layout,
           "extended": article.gid}[case]
    if case == "extended":
        with get_write_engine().begin() as conn:
            conn.execute(update(items_t).where(items_t.c.gid == gid).values(is_extended=True))
    with pytest.raises(Unprocessable) as err:
        modify(project, "definition", gid, label={"en": "x"})
    assert err.value.status == 422 and err.value.code == 422


# --- reads ---------------------------------------------------------------------------------


def test_get_keeps_order_and_skips_unknown(small: SeedResult, project: Project) -> None:
    """``get`` answers the items asked for in order, once each, skipping unknown gids and
    other projects' items."""
    a = named(project.gid, "definition", "article")
    s = named(project.gid, "definition", "section")
    other = named(small.projects[1].gid, "definition", "article")
    with get_engine().connect() as conn:
        rows = se.get(conn, project.gid, "definition", [s.gid, "x", other.gid, a.gid, s.gid])
        typed = se.get(conn, project.gid, "class", [a.gid])
    assert [r.gid for r in rows] == [s.gid, a.gid] and typed == []


def test_bulk_page_walks_the_selection_to_the_end(small: SeedResult, project: Project) -> None:
    """Pages follow the selection order, skip unknown and foreign gids and duplicates, are
    full until the last, and end with a null cursor; the total counts the whole selection."""
    mine = sorted(schema(project.gid).values(), key=lambda r: r.name + r.type)
    foreign = next(iter(schema(small.projects[1].gid)))
    wanted = [r.gid for r in mine]
    selection = [wanted[0], str(uuid.uuid4()), foreign, *wanted[1:], wanted[2]]
    parsed = parse_selection(selection, kind="schema")
    got: list[str] = []
    cursor = None
    pages = 0
    with get_engine().connect() as conn:
        while True:
            page = se.bulk_page(conn, project.gid, parsed, cursor=cursor, size=3)
            pages += 1
            assert page.total == len(wanted)
            assert len(page.rows) == 3 or page.cursor is None
            got += [r.gid for r in page.rows]
            cursor = page.cursor
            if cursor is None:
                break
    assert got == wanted and pages == -(-len(wanted) // 3)


def test_bulk_page_cursor_is_a_position_in_the_request(project: Project) -> None:
    """An item removed between two calls does not shift the next page; a bad cursor is a
    selection error."""
    gids = [r.gid for r in schema(project.gid).values() if r.type == "field"]
    parsed = parse_selection(gids, kind="schema")
    with get_engine().connect() as conn:
        first = se.bulk_page(conn, project.gid, parsed, cursor=None, size=1)
    with get_write_engine().begin() as conn:
        conn.execute(items_t.delete().where(items_t.c.gid == gids[0]))
    with get_engine().connect() as conn:
        second = se.bulk_page(conn, project.gid, parsed, cursor=first.cursor, size=1)
        assert [r.gid for r in second.rows] == [gids[1]]
        for bad in ("###", "e30=", json.dumps({"o": -1})):
            with pytest.raises(SelectionError):
                se.bulk_page(conn, project.gid, parsed, cursor=bad, size=1)
