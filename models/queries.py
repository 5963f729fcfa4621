"""Read queries shared by the API, the worker and the stream: membership, public shapes."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import select
from sqlmodel import Session

from models.auth import Member, Project
from models.records import DELETED, Record, deleted_ids


def visible_projects(session: Session, *, user_gid: str, ops: bool = False) -> set[str]:
    """Projects a user may act on or watch: active memberships, or every project for ops."""
    if ops:
        rows = session.execute(select(Project.gid).where(Project.status == "active"))
    else:
        rows = session.execute(
            select(Member.project_gid).join(Project, Project.gid == Member.project_gid).where(
                Member.user_gid == user_gid, Member.status == "active",
                Project.status == "active",
            )
        )
    return {r[0] for r in rows}


def records_public(session: Session, records: Sequence[Record]) -> dict[str, dict[str, Any]]:
    """Records in the Unicat shape, keyed by gid.  Ids of parents, ancestors (``path``),
    canonicals and backlinks are translated to gids with one query per kind, never per row."""
    ids: set[int] = set()
    for rec in records:
        ids.update(_path_ids(rec.mpath))
        if rec.canonical_id:
            ids.add(rec.canonical_id)
    gid_of = _gids(session, ids)
    own_ids = [r.id for r in records if r.id is not None]
    backlinks = _backlinks(session, own_ids, gid_of)
    deleted = deleted_ids(session.connection(), own_ids)
    out = {}
    for rec in records:
        path_ids = _path_ids(rec.mpath)
        out[rec.gid] = {
            "gid": rec.gid,
            "parent": gid_of.get(rec.parent_id) if rec.parent_id else None,
            "canonical": gid_of.get(rec.canonical_id, rec.gid) if rec.canonical_id else rec.gid,
            "backlinks": backlinks.get(rec.id or 0, []),
            "is_link": rec.is_link,
            "treelevel": rec.treelevel,
            "path": [gid_of.get(i, "") for i in reversed(path_ids)],
            "childcount": rec.childcount,
            "definition": rec.definition,
            "title": rec.title,
            "status": DELETED if rec.id in deleted else rec.status,
            "channels": rec.channels,
            "orderings": rec.orderings,
            "fields": rec.fields,
            "created_on": rec.created_on,
            "updated_on": rec.updated_on,
        }
    return out


def _path_ids(mpath: str) -> list[int]:
    return [int(p) for p in mpath.strip("/").split("/") if p]


def _gids(session: Session, ids: Iterable[int]) -> dict[int, str]:
    ids = list(ids)
    out: dict[int, str] = {}
    for chunk in _chunks(ids, 900):
        out.update(session.execute(select(Record.id, Record.gid).where(Record.id.in_(chunk))).all())
    return out


def _backlinks(session: Session, ids: list[int], gid_of: dict[int, str]) -> dict[int, list[str]]:
    out: dict[int, list[str]] = {}
    for chunk in _chunks(ids, 900):
        rows = session.execute(
            select(Record.canonical_id, Record.gid)
            .where(Record.canonical_id.in_(chunk), Record.is_link.is_(True))
            .order_by(Record.id)
        )
        for canonical_id, gid in rows:
            out.setdefault(canonical_id, []).append(gid)
    return out


def _chunks(items: list[int], size: int) -> Iterable[list[int]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def schema_public(item: Any) -> dict[str, Any]:
    """A schema item in the Unicat shape."""
    out: dict[str, Any] = {
        "gid": item.gid, "name": item.name, "label": item.label, "is_new": item.is_new,
        "is_working_copy": item.is_working_copy, "original": item.original,
        "metadata": {}, **(item.body or {}),
    }
    if item.type == "definition":
        out.update(is_base=item.is_base, is_extended=item.is_extended, classes=item.classes,
                   fields=item.fields, layout=item.layout)
        # Defaults only: a definition's body may hold its own titlefield, childdefinitions…
        for key, default in (("titlefield", None), ("fieldlists", {}), ("childdefinitions", [])):
            out.setdefault(key, default)
    elif item.type == "class":
        out.update(fields=item.fields, layout=item.layout)
    return out


SCHEMA_DATA_KEYS = {"definition": "definitions", "class": "classes", "field": "fields",
                    "layout": "layouts"}
