"""Editing single records: create, update, publish, unpublish.  Every change writes a
version or a workflow entry through :mod:`models.history`.  Shared by every dialect."""

from __future__ import annotations

import time
import uuid
from typing import Any

from sqlalchemy import Connection, select, update

from bulkjobs.errors import Unprocessable, ValidationError
from models.auth import ALL_CHANNEL, Project
from models.history import clear_published, mark_published, write_versions, write_workflow
from models.records import Record, is_deleted
from models.schema import SchemaItem
from models.search.index import reindex

records = Record.__table__

MAX_TEXT = 100_000


def find(conn: Connection, project_gid: str, gid: str, *, live: bool = True) -> Any:
    """The record row, or :class:`Unprocessable` (Unicat's 422 for unknown entities)."""
    row = conn.execute(select(records).where(records.c.gid == gid,
                                             records.c.project_gid == project_gid)).first()
    if row is None or (live and is_deleted(conn, row.id)):
        raise Unprocessable("Record not found", info={"record": gid})
    return row


def _check_texts(project: Project, title: Any, fields: Any) -> None:
    langs = set(project.languages)
    if title is not None:
        if not isinstance(title, dict) or not all(
                isinstance(k, str) and isinstance(v, str) and len(v) <= MAX_TEXT
                for k, v in title.items()):
            raise ValidationError("title must be an object of language: text",
                                  info={"title": "invalid"})
        unknown = set(title) - langs
        if unknown:
            raise ValidationError("unknown language", info={"languages": sorted(unknown)})
    if fields is not None:
        if not isinstance(fields, dict) or not all(
                isinstance(v, dict) for v in fields.values()):
            raise ValidationError("fields must be an object of language: {field: value}",
                                  info={"fields": "invalid"})
        unknown = set(fields) - langs
        if unknown:
            raise ValidationError("unknown language", info={"languages": sorted(unknown)})


def _check_field_names(conn: Connection, project: Project, definition: str | None,
                       fields: Any) -> None:
    """Every field named in ``fields`` must be a field of the definition (its own fields
    and its classes' fields): clients build a record's fields from its definition."""
    if not fields:
        return
    names = {name for values in fields.values() for name in values
             if not name.endswith("/key")}
    if not names:
        return
    allowed: set[str] = set()
    item = conn.execute(select(SchemaItem.fields, SchemaItem.classes).where(
        SchemaItem.gid == definition, SchemaItem.project_gid == project.gid)).first()
    if item is not None:
        field_gids = list(item.fields or [])
        for class_fields in conn.execute(select(SchemaItem.fields).where(
                SchemaItem.gid.in_(list(item.classes or [])),
                SchemaItem.project_gid == project.gid)).scalars():
            field_gids += list(class_fields or [])
        allowed = set(conn.execute(select(SchemaItem.name).where(
            SchemaItem.gid.in_(field_gids), SchemaItem.project_gid == project.gid)).scalars())
    unknown = sorted(names - allowed)
    if unknown:
        raise ValidationError("no such field in the record's definition",
                              info={"fields": unknown[:20]})


def _check_channels(project: Project, channels: Any) -> list[str] | None:
    if channels is None:
        return None
    if not isinstance(channels, list) or not all(isinstance(c, str) for c in channels):
        raise ValidationError("channels must be a list of channel keys")
    unknown = set(channels) - set(project.channels)
    if unknown:
        raise ValidationError("unknown channel", info={"channels": sorted(unknown)})
    return [ALL_CHANNEL] + [c for c in dict.fromkeys(channels) if c != ALL_CHANNEL]


def _check_orderings(project: Project, orderings: Any) -> dict[str, int] | None:
    if orderings is None:
        return None
    if not isinstance(orderings, dict) or not all(
            isinstance(v, int) and not isinstance(v, bool) and abs(v) < 2**31
            for v in orderings.values()):
        raise ValidationError("orderings must be an object of ordering: position")
    unknown = set(orderings) - set(project.orderings)
    if unknown:
        raise ValidationError("unknown ordering", info={"orderings": sorted(unknown)})
    return dict(orderings)


def create(
    conn: Connection, project: Project, *, parent_gid: str, editor: dict[str, Any],
    title: Any = None, fields: Any = None, definition: str | None = None,
    channels: Any = None,
) -> str:
    """Append a new last child of ``parent_gid``; writes version 0.  Returns its gid."""
    parent = find(conn, project.gid, parent_gid)
    if parent.is_link:
        raise Unprocessable("A linked record cannot have children", info={"parent": parent_gid})
    _check_texts(project, title, fields)
    chans = _check_channels(project, channels) or [ALL_CHANNEL]
    if definition is None:
        definition = _default_definition(conn, project.gid, parent.id)
    elif conn.execute(select(SchemaItem.id).where(
            SchemaItem.gid == definition, SchemaItem.project_gid == project.gid,
            SchemaItem.type == "definition")).first() is None:
        raise ValidationError("unknown definition", info={"definition": definition})
    _check_field_names(conn, project, definition, fields)
    now = time.time()
    gid = str(uuid.uuid4())
    rid = conn.execute(records.insert().values(
        gid=gid, project_gid=project.gid, parent_id=parent.id, canonical_id=None,
        is_link=False, treelevel=parent.treelevel + 1, mpath="", childcount=0,
        definition=definition, title=title or {}, fields=fields or {}, status="draft",
        channels=chans, orderings={}, created_on=now, updated_on=now,
    )).inserted_primary_key[0]
    conn.execute(update(records).where(records.c.id == rid).values(
        mpath=f"{parent.mpath}{rid}/"))
    conn.execute(update(records).where(records.c.id == parent.id).values(
        childcount=records.c.childcount + 1, updated_on=now))
    write_versions(conn, [rid], editor=editor, comment="Initial version", now=now)
    reindex(conn, [rid])
    return gid


def _default_definition(conn: Connection, project_gid: str, parent_id: int) -> str | None:
    """The last sibling's definition, else the project's base definition."""
    last = conn.execute(select(records.c.definition).where(records.c.parent_id == parent_id)
                        .order_by(records.c.id.desc()).limit(1)).scalar()
    if last:
        return str(last)
    base = conn.execute(select(SchemaItem.gid).where(
        SchemaItem.project_gid == project_gid, SchemaItem.type == "definition",
        SchemaItem.is_base.is_(True))).scalar()
    return str(base) if base else None


def update_content(
    conn: Connection, project: Project, *, gid: str, editor: dict[str, Any],
    title: Any = None, fields: Any = None, channels: Any = None, orderings: Any = None,
    comment: str = "",
) -> None:
    """Merge the given title/fields (per language) and set channels/orderings; a new
    version."""
    row = find(conn, project.gid, gid)
    _check_texts(project, title, fields)
    _check_field_names(conn, project, row.definition, fields)
    chans = _check_channels(project, channels)
    ords = _check_orderings(project, orderings)
    values: dict[str, Any] = {"updated_on": time.time()}
    if title is not None:
        values["title"] = {**(row.title or {}), **title}
    if fields is not None:
        merged = {lang: dict(v) for lang, v in (row.fields or {}).items()}
        for lang, vals in fields.items():
            merged.setdefault(lang, {}).update(vals)
        values["fields"] = merged
    if chans is not None:
        values["channels"] = chans
    if ords is not None:
        values["orderings"] = {**(row.orderings or {}), **ords}
    conn.execute(update(records).where(records.c.id == row.id).values(**values))
    write_versions(conn, [row.id], editor=editor, comment=comment or "Edited",
                   now=values["updated_on"])
    if title is not None or fields is not None:
        reindex(conn, [row.id])


def set_published(conn: Connection, project: Project, *, gid: str, editor: dict[str, Any],
                  published: bool) -> None:
    row = find(conn, project.gid, gid)
    now = time.time()
    status = "published" if published else "draft"
    conn.execute(update(records).where(records.c.id == row.id).values(status=status,
                                                                      updated_on=now))
    (mark_published if published else clear_published)(conn, [row.id])
    write_workflow(conn, [row.id], action="publish" if published else "unpublish",
                   actor=editor, now=now)
