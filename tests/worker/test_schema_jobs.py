"""Schema jobs (``worker/jobs/schema.py``) run through the runner in-process: jobs are made
with ``submit`` and run by calling ``run`` directly (no Celery), against the real database
and Redis.  Working copies and new items are made with ``models.schema_editing``."""

from __future__ import annotations

import time
import uuid
from dataclasses import replace
from typing import Any, NamedTuple

import pytest
from sqlalchemy import Engine, insert, select, text, update
from sqlmodel import Session

from bulkjobs.connections import get_synclog
from bulkjobs.errors import SelectionError
from models import Job, Project, Record, SchemaItem
from models import schema_editing as se
from models.engine import get_engine, get_write_engine
from models.resolve import resolve_into
from models.seed import SeedResult, seed
from models.selection import parse_selection
from worker.deps import Deps, RunConfig
from worker.jobs import CATALOGUE
from worker.jobs.base import Context, Effects
from worker.jobs.schema import COPY_SUFFIX, NOT_MODIFIED
from worker.runner import run
from worker.submit import submit

pytestmark = pytest.mark.services

items_t = SchemaItem.__table__
jobs_t = Job.__table__

COMMIT, REVERT = "bulk_commit_schema_items", "bulk_revert_schema_items"
SAVE_AS_NEW, COPY = "bulk_save_as_new_schema_items", "bulk_copy_schema_items"


# --- helpers -------------------------------------------------------------------------------


@pytest.fixture
def small(services: Engine) -> SeedResult:
    """Two projects with the seeded schema and a handful of records."""
    with get_write_engine().begin() as conn:
        return seed(conn, records=20, projects=2, seed_value=5)


@pytest.fixture
def project(small: SeedResult) -> Project:
    with Session(get_engine(), expire_on_commit=False) as session:
        found = session.get(Project, small.projects[0].gid)
        assert found is not None
        return found


def schema(project_gid: str) -> dict[str, Any]:
    with get_engine().connect() as conn:
        return {r.gid: r for r in conn.execute(
            select(items_t).where(items_t.c.project_gid == project_gid))}


def named(project_gid: str, type_: str, name: str) -> Any:
    [row] = [r for r in schema(project_gid).values() if r.type == type_ and r.name == name
             and se.is_committed(r)]
    return row


def create(project: Project, type_: str, **values: Any) -> se.EditResult:
    with get_write_engine().begin() as conn:
        return se.create(conn, project, type_=type_, values=values)


def modify(project: Project, type_: str, gid: str, **values: Any) -> se.EditResult:
    with get_write_engine().begin() as conn:
        return se.modify(conn, project, type_=type_, gid=gid, values=values)


def extended(project: Project, definition: Any) -> str:
    """An extended definition (a record's private working copy of ``definition``)."""
    gid = str(uuid.uuid4())
    with get_write_engine().begin() as conn:
        conn.execute(insert(items_t).values(
            gid=gid, project_gid=project.gid, type="definition", name=definition.name,
            label=definition.label, is_new=False, is_working_copy=True,
            original=definition.gid, is_base=False, is_extended=True,
            classes=definition.classes, fields=[], layout=definition.layout, body={},
            created_on=time.time(), updated_on=time.time()))
    return gid


def content(row: Any) -> tuple[Any, ...]:
    return (row.name, row.label, row.classes, row.fields, row.body)


def cfg(**kw: Any) -> RunConfig:
    base = dict(batch_size=1000, progress_interval=0.0, heartbeat_interval=2.0,
                stale_after=30.0, slice_seconds=60.0)
    return RunConfig(**{**base, **kw})


def do(project: Project, job: str, selection: list[Any], **kw: Any) -> Any:
    """Submit and run a job to its end; returns its job row."""
    log = get_synclog()
    token = submit(project_gid=project.gid, job=job, params={"selection": selection},
                   actor={"type": "user", "id": "tester"}, log=log, enqueue=lambda t: None)
    queued, outcomes = [token], []
    while queued and len(outcomes) < 100:
        queued.pop()
        outcomes.append(run(token, deps=Deps.default(log), cfg=cfg(**kw), requeue=queued.append))
    assert outcomes[-1] == "done"
    with get_engine().connect() as conn:
        return conn.execute(select(jobs_t).where(jobs_t.c.token == token)).one()


def info(total: int, errors: list[tuple[str, str]] | None = None) -> dict[str, Any]:
    errors = errors or []
    return {"total": total, "remaining": 0, "failed": len(errors),
            "errors": [{"gid": g, "reason": r} for g, r in errors]}


def extended_reason(verb: str) -> str:
    return f"extended definitions cannot be {verb}; use the records/definition api"


# --- selection -----------------------------------------------------------------------------


def shared_layout(project: Project, root: str | None = None) -> SharedLayout:
    """The article definition and a committed class sharing its layout, both with working
    copies that share one layout copy (modified first with ``root``, when given)."""
    article = named(project.gid, "definition", "article")
    cls = create(project, "class", name="aside", layout=article.layout).gid
    do(project, COMMIT, [cls])
    layout_copy = (modify(project, "layout", article.layout, root=root).gid
                   if root is not None else None)
    d_copy = modify(project, "definition", article.gid, label={"en": "D"})
    c_copy = modify(project, "class", cls, label={"en": "C"})
    return SharedLayout(article, layout_copy, d_copy, c_copy)


class SharedLayout(NamedTuple):
    article: Any
    layout_copy: str | None
    d_copy: se.EditResult
    c_copy: se.EditResult


def test_schema_selection_resolves_originals_to_their_working_copies(
    small: SeedResult, project: Project
) -> None:
    """Plain gids resolve against schema items; an original with a working copy stands for
    the copy (once, whichever of the two is named), extended copies never; unknown and
    foreign gids are skipped."""
    article = named(project.gid, "definition", "article")
    section = named(project.gid, "definition", "section")
    copy = modify(project, "definition", article.gid, label={"en": "A"}).gid
    extended(project, section)
    foreign = named(small.projects[1].gid, "definition", "base").gid
    value = [article.gid, str(uuid.uuid4()), copy, foreign, section.gid, article.layout]
    token = str(uuid.uuid4())
    with get_write_engine().connect() as conn, conn.begin() as tx:
        total = resolve_into(conn, token=token, project_gid=project.gid,
                             selection=parse_selection(value, kind="schema"), mode="live")
        got = list(conn.execute(text(
            "SELECT s.gid FROM job_item j JOIN schema_item s ON s.id = j.item_id "
            "WHERE j.job_token = :t ORDER BY j.id"), {"t": token}).scalars())
        tx.rollback()
    layout_copy = schema(project.gid)[copy].layout
    assert got == [copy, section.gid, layout_copy] and total == 3


def test_children_entry_is_refused_before_queueing(project: Project) -> None:
    """A children entry in a schema selection is a selection error; no job is written."""
    with pytest.raises(SelectionError) as err:
        submit(project_gid=project.gid, job=COMMIT, params={"selection": [
            {"children": str(uuid.uuid4())}]}, actor={}, log=get_synclog(),
            enqueue=lambda t: None)
    assert err.value.info["entry"] == 0
    with get_engine().connect() as conn:
        assert conn.execute(select(jobs_t)).first() is None


def test_schema_jobs_are_catalogued_as_schema_kind() -> None:
    """The four schema jobs are in the catalogue with selections of kind schema."""
    for name in (COMMIT, REVERT, SAVE_AS_NEW, COPY):
        assert CATALOGUE[name].kind == "schema"


# --- commit --------------------------------------------------------------------------------


def test_commit_applies_working_copy_and_layout_to_originals(project: Project) -> None:
    """The original keeps its gid and takes the copy's content, its layout takes the layout
    copy's content, and both copies are removed."""
    article = named(project.gid, "definition", "article")
    body = named(project.gid, "field", "body")
    copy = modify(project, "definition", article.gid, name="story", label={"nl": "Verhaal"},
                  fields=[body.gid])
    modify(project, "layout", copy.layout or "", components={"c1": {"type": "field"}})
    before = schema(project.gid)
    row = do(project, COMMIT, [article.gid])
    after = schema(project.gid)
    assert row.status == "done" and row.info == info(1)
    assert copy.gid not in after and copy.layout not in after
    new = after[article.gid]
    assert content(new) == content(before[copy.gid])
    assert se.is_committed(new) and new.layout == article.layout and new.is_base is False
    assert after[article.layout].body["components"] == {"c1": {"type": "field"}}
    assert se.is_committed(after[article.layout])
    assert set(after) == set(before) - {copy.gid, copy.layout}


def test_commit_new_items_become_committed_with_their_layouts(project: Project) -> None:
    """A new definition and its new layout, and a new field, become committed in place."""
    d = create(project, "definition", name="chapter")
    f = create(project, "field", name="isbn")
    row = do(project, COMMIT, [d.gid, f.gid])
    rows = schema(project.gid)
    assert row.info == info(2)
    for gid in (d.gid, d.layout, f.gid):
        assert se.is_committed(rows[gid]), gid
    assert rows[d.gid].layout == d.layout


@pytest.mark.parametrize("batch_size", [1, 1000])
def test_commit_layout_copy_selected_with_its_owner_is_committed_once(
    project: Project, batch_size: int
) -> None:
    """Selecting a definition copy and its layout copy commits both once; the layout copy,
    gone with its owner, is not counted as failed."""
    article = named(project.gid, "definition", "article")
    copy = modify(project, "definition", article.gid, label={"en": "X"})
    row = do(project, COMMIT, [copy.gid, copy.layout], batch_size=batch_size)
    rows = schema(project.gid)
    assert row.info == info(2)
    assert copy.gid not in rows and copy.layout not in rows
    assert rows[article.gid].label["en"] == "X" and rows[article.gid].layout == article.layout


def test_commit_shared_layout_copy_repoints_other_owners(project: Project) -> None:
    """When two owners' copies share a layout copy, committing one commits the layout and
    the other copy then points at the committed layout."""
    article, layout_copy, d_copy, c_copy = shared_layout(project, root="r")
    assert d_copy.layout == c_copy.layout == layout_copy
    row = do(project, COMMIT, [d_copy.gid])
    rows = schema(project.gid)
    assert row.info == info(1) and layout_copy not in rows
    assert rows[article.layout].body["root"] == "r"
    assert rows[c_copy.gid].layout == article.layout and rows[c_copy.gid].is_working_copy


def test_commit_layout_copy_alone_repoints_owner_copy(project: Project) -> None:
    """Committing a layout working copy by itself updates the original layout and points the
    owner's working copy at it."""
    article = named(project.gid, "definition", "article")
    copy = modify(project, "definition", article.gid, label={"en": "D"})
    modify(project, "layout", copy.layout or "", root="top")
    row = do(project, COMMIT, [copy.layout])
    rows = schema(project.gid)
    assert row.info == info(1) and copy.layout not in rows
    assert rows[copy.gid].layout == article.layout and rows[article.layout].body["root"] == "top"
    assert rows[article.gid].label["en"] == "Article"


@pytest.mark.parametrize("batch_size", [1, 1000])
def test_commit_failures_per_item(project: Project, batch_size: int) -> None:
    """Unmodified items, extended definitions and a second new item claiming a name fail
    with reasons; the rest is committed and the job ends done."""
    section = named(project.gid, "definition", "section")
    price = named(project.gid, "field", "price")
    ext = extended(project, section)
    first = create(project, "field", name="dup").gid
    second = create(project, "field", name="dup").gid
    summary = named(project.gid, "field", "summary")
    renamed = modify(project, "field", summary.gid, name="summary2").gid
    row = do(project, COMMIT, [price.gid, ext, first, second, renamed],
             batch_size=batch_size)
    assert row.status == "done"
    assert row.info == info(5, [(price.gid, NOT_MODIFIED), (ext, extended_reason("committed")),
                                (second, "name 'dup' already in use by another field")])
    rows = schema(project.gid)
    assert se.is_committed(rows[first]) and rows[second].is_new
    assert rows[summary.gid].name == "summary2" and renamed not in rows
    assert rows[ext].is_extended and rows[ext].is_working_copy


def test_commit_fails_when_a_committed_item_took_the_name(project: Project) -> None:
    """A working copy renamed to a name that another item took since fails at commit."""
    body = named(project.gid, "field", "body")
    copy = modify(project, "field", body.gid, name="text").gid
    fresh = create(project, "field", name="text").gid
    do(project, COMMIT, [fresh])
    row = do(project, COMMIT, [copy])
    assert row.info == info(1, [(copy, "name 'text' already in use by another field")])
    assert schema(project.gid)[body.gid].name == "body"


def test_commit_fails_when_the_original_is_gone(project: Project) -> None:
    """A working copy whose original no longer exists is not committed."""
    price = named(project.gid, "field", "price")
    copy = modify(project, "field", price.gid, unit="EUR").gid
    with get_write_engine().begin() as conn:
        conn.execute(items_t.delete().where(items_t.c.gid == price.gid))
    row = do(project, COMMIT, [copy])
    assert row.info == info(1, [(copy, "the original no longer exists")])
    assert schema(project.gid)[copy].is_working_copy


# --- revert --------------------------------------------------------------------------------


def test_revert_drops_working_copy_and_layout_copy(project: Project) -> None:
    """Reverting a definition's working copy (selected through the original) removes it and
    its layout copy; the originals are untouched."""
    article = named(project.gid, "definition", "article")
    before = schema(project.gid)
    copy = modify(project, "definition", article.gid, label={"en": "Gone"})
    assert {copy.gid, copy.layout} <= set(schema(project.gid))
    row = do(project, REVERT, [article.gid])
    assert row.info == info(1)
    assert schema(project.gid) == before


def test_revert_removes_new_items_with_their_new_layouts(project: Project) -> None:
    """Reverting a new class removes it and the new layout made for it."""
    before = schema(project.gid)
    cls = create(project, "class", name="temp")
    row = do(project, REVERT, [cls.gid])
    assert row.info == info(1) and schema(project.gid) == before


def test_revert_shared_layout_copy_stays_for_the_other_owner(project: Project) -> None:
    """Reverting one owner's copy keeps the layout copy another owner's copy points at."""
    _, _, d_copy, c_copy = shared_layout(project)
    assert d_copy.layout == c_copy.layout
    row = do(project, REVERT, [d_copy.gid])
    rows = schema(project.gid)
    assert row.info == info(1) and d_copy.gid not in rows
    assert rows[c_copy.gid].layout == c_copy.layout and c_copy.layout in rows


def test_revert_layout_copy_alone_repoints_owner_copy(project: Project) -> None:
    """Reverting a layout working copy by itself points the owner's copy at the original."""
    article = named(project.gid, "definition", "article")
    copy = modify(project, "definition", article.gid, label={"en": "D"})
    row = do(project, REVERT, [copy.layout])
    rows = schema(project.gid)
    assert row.info == info(1) and copy.layout not in rows
    assert rows[copy.gid].layout == article.layout and rows[copy.gid].is_working_copy


def test_revert_failures_per_item(small: SeedResult, project: Project) -> None:
    """Unmodified items, extended definitions, a new layout another item uses and a new
    definition records use fail with reasons; the other items are reverted."""
    base = named(project.gid, "definition", "base")
    ext = extended(project, base)
    cls = create(project, "class", name="keeper")
    used = create(project, "definition", name="used", layout=None).gid
    with get_write_engine().begin() as conn:
        conn.execute(update(Record.__table__).where(
            Record.__table__.c.gid == small.projects[0].heads[0]).values(definition=used))
    gone = create(project, "field", name="gone").gid
    row = do(project, REVERT, [base.gid, ext, cls.layout, used, gone])
    assert row.status == "done"
    assert row.info == info(5, [
        (base.gid, NOT_MODIFIED), (ext, extended_reason("reverted")),
        (used, "the new definition is used by records"),
        (cls.layout, "the new layout is used by another schema item")])
    rows = schema(project.gid)
    assert {ext, cls.gid, cls.layout, used} <= set(rows) and gone not in rows


@pytest.mark.parametrize("job", [COMMIT, REVERT])
def test_records_using_a_removed_working_copy_move_to_the_original(
    small: SeedResult, project: Project, job: str
) -> None:
    """A record that uses a definition working copy uses the original once the copy is
    committed or reverted away."""
    article = named(project.gid, "definition", "article")
    copy = modify(project, "definition", article.gid, label={"en": "W"}).gid
    records_t = Record.__table__
    head = small.projects[0].root
    with get_write_engine().begin() as conn:
        conn.execute(update(records_t).where(records_t.c.gid == head).values(definition=copy))
    row = do(project, job, [copy])
    with get_engine().connect() as conn:
        used = conn.execute(select(records_t.c.definition).where(records_t.c.gid == head))
        assert row.info == info(1) and used.scalar_one() == article.gid


# --- save as new ---------------------------------------------------------------------------


def test_save_as_new_turns_working_copy_into_new_item(project: Project) -> None:
    """The working copy (same gid) becomes a new item without an original, its layout copy
    becomes new with it, and the original and its layout are untouched."""
    article = named(project.gid, "definition", "article")
    before = schema(project.gid)
    copy = modify(project, "definition", article.gid, name="story")
    row = do(project, SAVE_AS_NEW, [article.gid])
    rows = schema(project.gid)
    assert row.info == info(1)
    saved, layout = rows[copy.gid], rows[copy.layout or ""]
    assert saved.is_new and not saved.is_working_copy and saved.original is None
    assert saved.name == "story" and saved.layout == layout.gid
    assert layout.is_new and not layout.is_working_copy and layout.original is None
    assert rows[article.gid] == before[article.gid]
    assert rows[article.layout] == before[article.layout]


def test_save_as_new_shared_layout_copy_is_duplicated(project: Project) -> None:
    """When another owner's copy shares the layout copy, the saved item gets a new duplicate
    of it and the other copy keeps the working copy."""
    article, layout_copy, d_copy, c_copy = shared_layout(project, root="shared")
    row = do(project, SAVE_AS_NEW, [d_copy.gid])
    rows = schema(project.gid)
    assert row.info == info(1)
    dup = rows[rows[d_copy.gid].layout]
    assert dup.gid not in (layout_copy, article.layout) and dup.is_new
    assert dup.original is None and dup.body["root"] == "shared"
    assert rows[layout_copy].is_working_copy and rows[c_copy.gid].layout == layout_copy


def test_save_as_new_failures_per_item(project: Project) -> None:
    """Unmodified items, extended definitions and new items fail with reasons."""
    price = named(project.gid, "field", "price")
    ext = extended(project, named(project.gid, "definition", "section"))
    new = create(project, "field", name="fresh").gid
    copy = modify(project, "field", price.gid, unit="EUR").gid
    summary = named(project.gid, "field", "summary")
    row = do(project, SAVE_AS_NEW, [summary.gid, ext, new, copy])
    assert row.status == "done"
    assert row.info == info(4, [
        (summary.gid, NOT_MODIFIED), (ext, extended_reason("saved as new")),
        (new, "not a working copy: a new item is saved by committing it")])
    rows = schema(project.gid)
    assert rows[copy].is_new and rows[copy].original is None and se.is_committed(rows[price.gid])


# --- copy ----------------------------------------------------------------------------------


def test_copy_makes_new_items_with_new_layouts(project: Project) -> None:
    """A committed definition's copy is new, named ``<name>_copy``, with the same content and
    a new copy of the layout; a field's copy likewise; the originals are untouched."""
    article = named(project.gid, "definition", "article")
    body = named(project.gid, "field", "body")
    before = schema(project.gid)
    row = do(project, COPY, [article.gid, body.gid])
    rows = schema(project.gid)
    assert row.info == info(2)
    added = {g: r for g, r in rows.items() if g not in before}
    assert len(added) == 3
    d = next(r for r in added.values() if r.type == "definition")
    f = next(r for r in added.values() if r.type == "field")
    layout = added[d.layout]
    assert d.is_new and d.original is None and d.name == "article" + COPY_SUFFIX
    assert (d.label, d.classes, d.body) == (article.label, article.classes, article.body)
    assert layout.is_new and layout.body == before[article.layout].body
    assert f.is_new and f.body == body.body and f.name == "body" + COPY_SUFFIX
    assert all(rows[g] == before[g] for g in before)


def test_copy_failures_per_item(project: Project) -> None:
    """Modified items (also when selected through the original), new items and extended
    definitions fail with reasons; committed ones are copied."""
    article = named(project.gid, "definition", "article")
    price = named(project.gid, "field", "price")
    copy = modify(project, "definition", article.gid, label={"en": "M"}).gid
    new = create(project, "field", name="fresh").gid
    ext = extended(project, named(project.gid, "definition", "section"))
    count = len(schema(project.gid))
    row = do(project, COPY, [article.gid, new, ext, price.gid])
    modified = "modified items cannot be copied; commit or revert the working copy first"
    assert row.status == "done"
    assert row.info == info(4, [(copy, modified),
                                (new, "new items cannot be copied; commit it first"),
                                (ext, extended_reason("copied"))])
    assert len(schema(project.gid)) == count + 1


# --- sync events ---------------------------------------------------------------------------


def events_of(project: Project, job: str, selection: list[Any], **kw: Any
              ) -> list[tuple[str, str, str]]:
    """Run a job; the project-space events it appended, as ``(data_type, action, gid)``."""
    log = get_synclog()
    after = log.cursor(project.gid)
    assert do(project, job, selection, **kw).status == "done"
    page = log.read(project.gid, after)
    assert page.recovered and not page.more
    events = [e.as_dict() for e in page.events]
    assert all(e["type"] == project.gid and "data" not in e for e in events)
    return [(e["data_type"], e["action"], e["data_key"]) for e in events]


def test_commit_announces_originals_updated_and_copies_removed(project: Project) -> None:
    """Committing a definition's working copy and a new field: the original definition and
    its layout are announced UPDATEd, both copies DELETEd, the field UPDATEd, each once —
    with record events switched off, which does not apply to schema events."""
    article = named(project.gid, "definition", "article")
    copy = modify(project, "definition", article.gid, label={"en": "Story"})
    field = create(project, "field", name="isbn")
    got = events_of(project, COMMIT, [article.gid, field.gid], record_events=False)
    assert sorted(got) == sorted([
        ("definitions", "UPDATE", article.gid), ("layouts", "UPDATE", article.layout),
        ("definitions", "DELETE", copy.gid), ("layouts", "DELETE", copy.layout),
        ("fields", "UPDATE", field.gid)])


def test_commit_of_a_shared_layout_copy_announces_the_repointed_owner(project: Project) -> None:
    """The other owner's working copy, pointed at the committed layout, is UPDATEd too."""
    article, layout_copy, d_copy, c_copy = shared_layout(project, root="r")
    got = events_of(project, COMMIT, [d_copy.gid])
    assert sorted(got) == sorted([
        ("definitions", "UPDATE", article.gid), ("layouts", "UPDATE", article.layout),
        ("classes", "UPDATE", c_copy.gid),
        ("definitions", "DELETE", d_copy.gid), ("layouts", "DELETE", layout_copy)])


def test_revert_announces_what_it_removed(project: Project) -> None:
    """Reverting a new class (with its new layout) and a field's working copy DELETEs the
    three; the untouched original is not announced."""
    cls = create(project, "class", name="temp")
    price = named(project.gid, "field", "price")
    copy = modify(project, "field", price.gid, unit="EUR").gid
    got = events_of(project, REVERT, [cls.gid, price.gid])
    assert sorted(got) == sorted([
        ("classes", "DELETE", cls.gid), ("layouts", "DELETE", cls.layout),
        ("fields", "DELETE", copy)])


def test_save_as_new_announces_the_saved_items_and_a_duplicated_layout(
    project: Project
) -> None:
    """Saving one of two owners' copies that share a layout copy: the saved copy is UPDATEd
    (it is new now) and the layout duplicated for it INSERTed; the shared copy stays."""
    _, _, d_copy, _ = shared_layout(project, root="shared")
    got = events_of(project, SAVE_AS_NEW, [d_copy.gid])
    dup = schema(project.gid)[d_copy.gid].layout
    assert sorted(got) == sorted([("definitions", "UPDATE", d_copy.gid),
                                  ("layouts", "INSERT", dup)])


def test_copy_announces_the_copies(project: Project) -> None:
    """Copying a definition and a field INSERTs the two copies and the definition's new
    layout; items that fail are not announced."""
    article = named(project.gid, "definition", "article")
    body = named(project.gid, "field", "body")
    new = create(project, "field", name="fresh").gid
    before = schema(project.gid)
    got = events_of(project, COPY, [article.gid, body.gid, new])
    added = {g: r for g, r in schema(project.gid).items() if g not in before}
    keys = {"definition": "definitions", "field": "fields", "layout": "layouts"}
    assert len(added) == 3
    assert sorted(got) == sorted((keys[r.type], "INSERT", g)
                                 for g, r in added.items())


def test_records_moved_off_a_removed_definition_copy_are_announced(
    small: SeedResult, project: Project
) -> None:
    """With record events on, records that used a definition working copy the revert
    removes are UPDATEd (they use the original now); with them off, only schema events."""
    article = named(project.gid, "definition", "article")
    for record_events in (True, False):
        copy = modify(project, "definition", article.gid, label={"en": "M"})
        with get_write_engine().begin() as conn:
            gids = list(conn.execute(text(
                "UPDATE record SET definition = :copy WHERE project_gid = :p AND parent_id "
                "IS NOT NULL AND definition = :orig RETURNING gid"
            ), {"copy": copy.gid, "p": project.gid, "orig": article.gid}).scalars())
        assert gids
        got = events_of(project, REVERT, [copy.gid], record_events=record_events)
        records_events = sorted(g for t, a, g in got if t == "records" and a == "UPDATE")
        assert records_events == (sorted(gids) if record_events else [])
        assert ("definitions", "DELETE", copy.gid) in got


# --- idempotence ---------------------------------------------------------------------------


@pytest.mark.parametrize("job", [COMMIT, REVERT, SAVE_AS_NEW, COPY])
def test_batch_run_twice_is_a_no_op(project: Project, job: str) -> None:
    """Running a batch a second time in the same transaction changes nothing more and
    announces nothing (the first run did change something, and noted it)."""
    article = named(project.gid, "definition", "article")
    price = named(project.gid, "field", "price")
    if job == COPY:
        gids = [article.gid, price.gid]
    else:
        gids = [modify(project, "definition", article.gid, label={"en": "Z"}).gid,
                modify(project, "field", price.gid, unit="x").gid,
                create(project, "class", name="k").gid]
    ids = [r.id for r in schema(project.gid).values() if r.gid in gids]
    ctx = Context(token=str(uuid.uuid4()), project_gid=project.gid, actor={}, params={},
                  now=time.time())
    batch = CATALOGUE[job].batch
    first, second = replace(ctx, effects=Effects()), replace(ctx, effects=Effects())
    with get_write_engine().connect() as conn, conn.begin() as tx:
        before = conn.execute(select(items_t).order_by(items_t.c.id)).all()
        batch(conn, first, ids)
        once = conn.execute(select(items_t).order_by(items_t.c.id)).all()
        batch(conn, second, ids)
        twice = conn.execute(select(items_t).order_by(items_t.c.id)).all()
        tx.rollback()
    assert once != before and once == twice
    assert first.effects.events and not second.effects.events  # nothing more to announce
