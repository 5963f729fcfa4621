"""Unicat schema endpoints: ``definitions|classes|fields|layouts/create|get|modify``,
``schema/search``, ``schema/bulk/get`` and the schema bulk jobs of SPEC §5.

Edits run in the request through :mod:`models.schema_editing` and, once committed, append
``definitions``/``classes``/``fields``/``layouts`` notifications to the project's sync space.
The bulk operations are queued as jobs (:mod:`worker.jobs.schema`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel

from api.deps import Actor, MemberDep, SessionDep
from api.queueing import IdempotencyDep
from api.unicat.bodies import (
    ClassCreateBody,
    ClassesGetBody,
    ClassModifyBody,
    DefinitionCreateBody,
    DefinitionModifyBody,
    DefinitionsGetBody,
    FieldCreateBody,
    FieldModifyBody,
    FieldsGetBody,
    LayoutCreateBody,
    LayoutModifyBody,
    LayoutsGetBody,
    SchemaBulkGetBody,
    SchemaSearchBody,
    SelectionBody,
)
from api.unicat.envelope import ok
from api.unicat.jobs import queue
from api.unicat.responses import JobQueuedOut, SchemaBulkOut, SchemaItemsOut, SchemaOut, answers
from bulkjobs.connections import get_synclog
from bulkjobs.errors import BadRequest, Unprocessable
from models import schema_editing
from models.engine import get_write_engine
from models.queries import SCHEMA_DATA_KEYS
from models.selection import parse_search, parse_selection

router = APIRouter(prefix="/api/p/{project}", tags=["unicat: schema"])

#: The request key naming the item, per type (``class`` is the only irregular one).
GID_KEY = {"definition": "definition", "class": "class_", "field": "field", "layout": "layout"}


def _values(body: BaseModel, type_: str) -> dict[str, Any]:
    """The properties the client sent (not the gid of the item being modified)."""
    return body.model_dump(exclude_unset=True, exclude={GID_KEY[type_]})


def _edited(actor: Actor, type_: str, edit: Callable[[Any], schema_editing.EditResult]
            ) -> Any:
    with get_write_engine().begin() as conn:
        result = edit(conn)
        rows = schema_editing.get(conn, actor.project.gid, None,
                                  [g for g in (result.gid, result.layout) if g])
    # After the commit: a client refetches on a notification and must see the change.
    get_synclog().append(actor.project.gid, schema_editing.events(actor.project.gid,
                                                                  result.changes))
    answer: dict[str, Any] = {type_: result.gid}
    if type_ in schema_editing.LAYOUT_OWNERS:
        answer["layout"] = result.layout
    return ok(answer, schema_editing.public_data(rows))


def _create(actor: Actor, type_: str, body: BaseModel) -> Any:
    return _edited(actor, type_, lambda conn: schema_editing.create(
        conn, actor.project, type_=type_, values=_values(body, type_)))


def _modify(actor: Actor, type_: str, gid: str, body: BaseModel) -> Any:
    return _edited(actor, type_, lambda conn: schema_editing.modify(
        conn, actor.project, type_=type_, gid=gid, values=_values(body, type_)))


def _get(actor: Actor, session: SessionDep, type_: str, one: str | None,
         many: list[str] | None) -> Any:
    if one is None and many is None:
        raise BadRequest(f"{type_} or {SCHEMA_DATA_KEYS[type_]} is required")
    gids = [one] if one is not None else list(many or [])
    rows = schema_editing.get(session.connection(), actor.project.gid, type_, gids)
    if one is not None:
        if not rows:
            raise Unprocessable(f"{type_.capitalize()} not found", info={type_: one})
        result: dict[str, Any] = {type_: one}
    else:
        result = {SCHEMA_DATA_KEYS[type_]: [r.gid for r in rows]}
    return ok(result, {SCHEMA_DATA_KEYS[type_]: schema_editing.public_data(rows).get(
        SCHEMA_DATA_KEYS[type_], {})})


# --- definitions ---------------------------------------------------------------------------


@router.post("/definitions/get", **answers(SchemaOut))
def definitions_get(project: str, body: DefinitionsGetBody, actor: MemberDep,
                    session: SessionDep) -> Any:
    """One definition (`definition`) or several (`definitions`); unknown gids are left out."""
    return _get(actor, session, "definition", body.definition, body.definitions)


@router.post("/definitions/create", **answers(SchemaOut))
def definitions_create(project: str, body: DefinitionCreateBody, actor: MemberDep) -> Any:
    """Create a new definition (with a new layout unless one is given); commit it to use it."""
    return _create(actor, "definition", body)


@router.post("/definitions/modify", **answers(SchemaOut))
def definitions_modify(project: str, body: DefinitionModifyBody, actor: MemberDep) -> Any:
    """Modify a definition; a committed one gets a working copy (layout included)."""
    return _modify(actor, "definition", body.definition, body)


# --- classes -------------------------------------------------------------------------------


@router.post("/classes/get", **answers(SchemaOut))
def classes_get(project: str, body: ClassesGetBody, actor: MemberDep,
                session: SessionDep) -> Any:
    """One class (`class`) or several (`classes`); unknown gids are left out."""
    return _get(actor, session, "class", body.class_, body.classes)


@router.post("/classes/create", **answers(SchemaOut))
def classes_create(project: str, body: ClassCreateBody, actor: MemberDep) -> Any:
    """Create a new class (with a new layout unless one is given); commit it to use it."""
    return _create(actor, "class", body)


@router.post("/classes/modify", **answers(SchemaOut))
def classes_modify(project: str, body: ClassModifyBody, actor: MemberDep) -> Any:
    """Modify a class; a committed one gets a working copy (layout included)."""
    return _modify(actor, "class", body.class_, body)


# --- fields --------------------------------------------------------------------------------


@router.post("/fields/get", **answers(SchemaOut))
def fields_get(project: str, body: FieldsGetBody, actor: MemberDep,
               session: SessionDep) -> Any:
    """One field (`field`) or several (`fields`); unknown gids are left out."""
    return _get(actor, session, "field", body.field, body.fields)


@router.post("/fields/create", **answers(SchemaOut))
def fields_create(project: str, body: FieldCreateBody, actor: MemberDep) -> Any:
    """Create a new field; commit it to use it."""
    return _create(actor, "field", body)


@router.post("/fields/modify", **answers(SchemaOut))
def fields_modify(project: str, body: FieldModifyBody, actor: MemberDep) -> Any:
    """Modify a field; a committed one gets a working copy."""
    return _modify(actor, "field", body.field, body)


# --- layouts -------------------------------------------------------------------------------


@router.post("/layouts/get", **answers(SchemaOut))
def layouts_get(project: str, body: LayoutsGetBody, actor: MemberDep,
                session: SessionDep) -> Any:
    """One layout (`layout`) or several (`layouts`); unknown gids are left out."""
    return _get(actor, session, "layout", body.layout, body.layouts)


@router.post("/layouts/create", **answers(SchemaOut))
def layouts_create(project: str, body: LayoutCreateBody, actor: MemberDep) -> Any:
    """Create a new layout; commit it to use it."""
    return _create(actor, "layout", body)


@router.post("/layouts/modify", **answers(SchemaOut))
def layouts_modify(project: str, body: LayoutModifyBody, actor: MemberDep) -> Any:
    """Modify a layout; a committed one gets a working copy."""
    return _modify(actor, "layout", body.layout, body)


# --- bulk ----------------------------------------------------------------------------------


def _items_answer(rows: list[Any], size: int, **extra: Any) -> Any:
    data: dict[str, Any] = {key: {} for key in SCHEMA_DATA_KEYS.values()}
    data.update(schema_editing.public_data(rows))
    return ok({"schema_items": [{"type": r.type, "item": r.gid} for r in rows],
               "schema_items.size": size, **extra}, data)


@router.post("/schema/search", **answers(SchemaItemsOut))
def search(project: str, body: SchemaSearchBody, actor: MemberDep, session: SessionDep) -> Any:
    """Search schema items (`q`, `filter`; `page.top`, `page.size` default 10,000)."""
    query = {"language": body.language, "q": body.q, "filter": body.filter}
    parsed = parse_search({k: v for k, v in query.items() if v is not None}, kind="schema")
    rows, total = schema_editing.search(session.connection(), actor.project.gid, parsed,
                                        top=body.page_top, size=body.page_size)
    return _items_answer(rows, total)


@router.post("/schema/bulk/get", **answers(SchemaBulkOut))
def bulk_get(project: str, body: SchemaBulkGetBody, actor: MemberDep,
             session: SessionDep) -> Any:
    """A page of the selected schema items (`page.cursor`, `page.size`); unknown gids skipped."""
    selection = parse_selection(body.selection, kind="schema")
    page = schema_editing.bulk_page(session.connection(), actor.project.gid, selection,
                                    cursor=body.page_cursor, size=body.page_size)
    return _items_answer(page.rows, page.total, **{"page.cursor": page.cursor})


@router.post("/schema/bulk/commit", **answers(JobQueuedOut))
def bulk_commit(project: str, body: SelectionBody, actor: MemberDep,
                idempotency: IdempotencyDep) -> Any:
    """Commit the selected working copies into their originals and new items (a job)."""
    return queue(actor, "bulk_commit_schema_items", {"selection": body.selection}, idempotency)


@router.post("/schema/bulk/revert", **answers(JobQueuedOut))
def bulk_revert(project: str, body: SelectionBody, actor: MemberDep,
                idempotency: IdempotencyDep) -> Any:
    """Drop the selected working copies (layouts too) and remove new items (a job)."""
    return queue(actor, "bulk_revert_schema_items", {"selection": body.selection}, idempotency)


@router.post("/schema/bulk/save_as_new", **answers(JobQueuedOut))
def bulk_save_as_new(project: str, body: SelectionBody, actor: MemberDep,
                     idempotency: IdempotencyDep) -> Any:
    """Turn the selected working copies into new items of their own (a job)."""
    return queue(actor, "bulk_save_as_new_schema_items", {"selection": body.selection}, idempotency)


@router.post("/schema/bulk/copy", **answers(JobQueuedOut))
def bulk_copy(project: str, body: SelectionBody, actor: MemberDep,
              idempotency: IdempotencyDep) -> Any:
    """Copy the selected committed items as new items (a job)."""
    return queue(actor, "bulk_copy_schema_items", {"selection": body.selection}, idempotency)
