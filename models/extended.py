"""Extended definitions: a record's private copy of its definition (Unicat's
``records/definition/…`` endpoints).

The first change made to a record's definition through the record gives it an *extended
definition*: a working copy of the definition it used (``is_extended``, ``is_working_copy``,
``original`` the definition it extends), used by that record alone.  Later changes go to that
copy; :func:`revert` puts the record back on the original and removes the copy.  The schema
endpoints never change an extended definition (``modify`` refuses it; the schema bulk jobs
fail it per item), and init data leaves them out on request (``omit_extended_definitions``).

A change of a record's definition is a change of the record: it writes a record version.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, select, update

from bulkjobs.errors import Unprocessable, ValidationError
from models import editing
from models.auth import Project
from models.history import write_versions
from models.records import Record
from models.schema import SchemaItem
from models.schema_editing import Change, EditResult, check_refs, copy_row

items = SchemaItem.__table__
records = Record.__table__


def change_classes(
    conn: Connection, project: Project, *, record_gid: str, editor: dict[str, Any],
    add: Sequence[str] = (), remove: Sequence[str] = (),
) -> EditResult:
    """Add committed classes to, or remove classes from, the record's definition, extending
    it first if it is not extended yet.  Returns the extended definition."""
    record = editing.find(conn, project.gid, record_gid)
    add = check_refs(conn, project.gid, "class", "class", list(add)) if add else []
    definition, changes = _extended_for(conn, project, record)
    unknown = [c for c in remove if c not in (definition.classes or [])]
    if unknown:  # raised inside the caller's transaction: the copy made above is undone
        raise ValidationError("the record's definition has no such class",
                              info={"class": unknown[0]})
    classes = [c for c in definition.classes or [] if c not in set(remove)]
    classes += [c for c in add if c not in classes]
    now = time.time()
    conn.execute(update(items).where(items.c.id == definition.id)
                 .values(classes=classes, updated_on=now))
    if not changes:
        changes.append(Change(definition.gid, "definition", "UPDATE"))
    _touch(conn, record.id, editor, now, "Definition extended")
    return EditResult(definition.gid, definition.layout, tuple(changes))


def revert(conn: Connection, project: Project, *, record_gid: str, editor: dict[str, Any]
           ) -> EditResult:
    """Put the record back on the definition its extended definition extends and remove the
    extended definition.  Returns the original definition."""
    record = editing.find(conn, project.gid, record_gid)
    definition = _definition(conn, project, record.definition)
    if definition is None or not definition.is_extended:
        raise Unprocessable("The record's definition is not extended",
                            info={"record": record_gid})
    now = time.time()
    conn.execute(update(records).where(records.c.id == record.id)
                 .values(definition=definition.original))
    conn.execute(items.delete().where(items.c.id == definition.id))
    _touch(conn, record.id, editor, now, "Definition reverted")
    original = _definition(conn, project, definition.original)
    return EditResult(definition.original, original.layout if original else None,
                      (Change(definition.gid, "definition", "DELETE"),))


def _definition(conn: Connection, project: Project, gid: str | None) -> Any:
    if gid is None:
        return None
    return conn.execute(select(items).where(items.c.gid == gid, items.c.type == "definition",
                                            items.c.project_gid == project.gid)).first()


def _extended_for(conn: Connection, project: Project, record: Any) -> tuple[Any, list[Change]]:
    """The record's extended definition, made now (as a copy of its definition) if need be."""
    current = _definition(conn, project, record.definition)
    if current is None:
        raise Unprocessable("The record has no definition", info={"record": record.gid})
    if current.is_extended:
        return current, []
    gid = copy_row(conn, current, time.time(), is_extended=True)
    conn.execute(update(records).where(records.c.id == record.id).values(definition=gid))
    made = conn.execute(select(items).where(items.c.gid == gid)).one()
    return made, [Change(gid, "definition", "INSERT")]


def _touch(conn: Connection, record_id: int, editor: dict[str, Any], now: float,
           comment: str) -> None:
    conn.execute(update(records).where(records.c.id == record_id).values(updated_on=now))
    write_versions(conn, [record_id], editor=editor, comment=comment, now=now)
