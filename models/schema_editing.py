"""Schema items one at a time (create, get, modify), the paged bulk read and schema search.

Shared by every dialect.  The rules (Unicat's, SPEC §3):

* **New items.**  ``create`` makes an item with ``is_new``; it must be committed before use.
  A definition or class created without a ``layout`` gets a new layout of its own.
* **Working copies.**  Modifying a *committed* item does not change it: a working copy is
  made (``is_working_copy``, ``original`` = the committed gid) and the change goes there; the
  original stays in use until the copy is committed.  For a definition or class the layout is
  copied too and the copy points at the copied layout.  Modifying a working copy or a new
  item changes it in place.
* **One working copy per original.**  Modifying a committed item that already has a working
  copy modifies that copy (its gid is returned), so each committed item has at most one
  (non-extended) working copy, and a layout working copy is shared by the owners' copies that
  point at it.  The bulk jobs rely on this when they act on "the" working copy of an original.
* **References name committed items.**  ``classes``, ``fields``, ``childdefinitions``,
  ``titlefield`` and ``layout`` must be gids of committed items of the right type in the
  project (as in Unicat: "you cannot add working copies … only committed ones").  So no job
  that removes a new item or a working copy can leave a dangling reference behind.
* **Names.**  A definition, class or field name looks like a variable name and is unique per
  type among *committed* items: ``create``/``modify`` refuse a name another committed item
  of the type holds (an item's own original does not count), and the commit job fails an
  item per item when, by then, another committed item took its name.  New items may share a
  name until one of them is committed.  Layout names are labels only: a layout belongs to the
  definitions and classes that point at it and is never looked up by name.
* **Extended definitions** (private to a record) are not modified here: 422.

Errors: :class:`~bulkjobs.errors.ValidationError` (1001) for invalid values,
:class:`~bulkjobs.errors.Unprocessable` (422) for an unknown gid or an impossible operation.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, func, insert, or_, select, text, update

from bulkjobs import cursors
from bulkjobs.errors import SelectionError, Unprocessable, ValidationError
from bulkjobs.synclog import NewEvent, record_event
from models import dialect
from models.auth import Project
from models.queries import SCHEMA_DATA_KEYS, schema_public
from models.schema import SCHEMA_TYPES, SchemaItem
from models.search.sql import search_count, search_ids
from models.selection import Gids, Search, Selection

items = SchemaItem.__table__

NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
TYPE_RE = re.compile(r"^[a-z][a-z0-9_]*$")
MAX_NAME = 100
MAX_TEXT = 100_000
MAX_REFS = 10_000

#: Keys stored in their own columns, per type (everything else goes into ``body``).
COLUMN_KEYS: dict[str, frozenset[str]] = {
    "definition": frozenset({"name", "label", "classes", "fields", "layout"}),
    "class": frozenset({"name", "label", "fields", "layout"}),
    "field": frozenset({"name", "label"}),
    "layout": frozenset({"name", "label"}),
}
#: Keys stored in ``body``, per type, with the value a new item starts with.
BODY_DEFAULTS: dict[str, dict[str, Any]] = {
    "definition": {"titlefield": None, "childdefinitions": [], "metadata": {}},
    "class": {"metadata": {}},
    "field": {"type": "textline", "options": {}, "is_localized": False, "is_required": False,
              "initial": {}, "unit": None, "metadata": {}},
    "layout": {"root": None, "components": {}, "metadata": {}},
}
#: Keys for which ``null`` is a value rather than "not given".
NULLABLE = frozenset({"layout", "titlefield", "unit", "root"})
#: Types whose items own a layout.
LAYOUT_OWNERS = ("definition", "class")
#: Types whose names are unique among committed items.
NAMED_TYPES = ("definition", "class", "field")


@dataclass(frozen=True, slots=True)
class Change:
    """One schema item written by an edit, for the project-space notification."""

    gid: str
    type: str
    action: str  # INSERT | UPDATE | DELETE


@dataclass(frozen=True, slots=True)
class EditResult:
    """What an edit did: ``gid`` is the item to use from now on (after modifying a committed
    item, its working copy), ``layout`` its layout, ``changes`` every row written."""

    gid: str
    layout: str | None
    changes: tuple[Change, ...]


def events(project_gid: str, changes: Iterable[Change]) -> list[NewEvent]:
    """Project-space notifications for ``changes`` (``definitions``/``classes``/… events)."""
    return [record_event(project=project_gid, data_type=SCHEMA_DATA_KEYS[c.type], gid=c.gid,
                         action=c.action) for c in changes]


def is_committed(row: Any) -> bool:
    return not row.is_new and not row.is_working_copy


# --- reads ---------------------------------------------------------------------------------


def find(conn: Connection, project_gid: str, type_: str, gid: str, *, lock: bool = False) -> Any:
    """The item row of that type, or :class:`Unprocessable` (Unicat's 422 for unknown
    entities).  ``lock`` takes a row lock on PostgreSQL (SQLite writers are serialised)."""
    query = select(items).where(items.c.gid == gid, items.c.project_gid == project_gid,
                                items.c.type == type_)
    if lock and dialect.is_pg(conn):
        query = query.with_for_update()
    row = conn.execute(query).first()
    if row is None:
        raise Unprocessable(f"{type_.capitalize()} not found", info={type_: gid})
    return row


def get(conn: Connection, project_gid: str, type_: str | None, gids: Sequence[str]) -> list[Any]:
    """The items with these gids (of ``type_``, or any type), in the order asked, each once;
    unknown gids and other projects' items are left out."""
    wanted = list(dict.fromkeys(gids))
    found: dict[str, Any] = {}
    for i in range(0, len(wanted), 900):
        query = select(items).where(items.c.gid.in_(wanted[i: i + 900]),
                                    items.c.project_gid == project_gid)
        if type_ is not None:
            query = query.where(items.c.type == type_)
        found.update((r.gid, r) for r in conn.execute(query))
    return [found[g] for g in wanted if g in found]


def public_data(rows: Iterable[Any]) -> dict[str, dict[str, Any]]:
    """Rows in the Unicat ``data`` shape: ``{"definitions": {gid: item}, …}`` (types present
    only)."""
    data: dict[str, dict[str, Any]] = {}
    for row in rows:
        data.setdefault(SCHEMA_DATA_KEYS[row.type], {})[row.gid] = schema_public(row)
    return data


# --- validation ----------------------------------------------------------------------------


def _check_name(value: Any) -> str:
    if not isinstance(value, str) or not NAME_RE.match(value) or len(value) > MAX_NAME:
        raise ValidationError(
            "name must look like a variable name: letters, digits and underscores, not "
            "starting with a digit", info={"name": value if isinstance(value, str) else None})
    return value


def _check_label(project: Project, value: Any) -> dict[str, str]:
    if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, str) and len(v) <= MAX_TEXT
            for k, v in value.items()):
        raise ValidationError("label must be an object of language: text",
                              info={"label": "invalid"})
    unknown = set(value) - set(project.languages)
    if unknown:
        raise ValidationError("unknown language", info={"languages": sorted(unknown)})
    return dict(value)


def _committed_gids(conn: Connection, project_gid: str, type_: str, gids: list[str]) -> set[str]:
    out: set[str] = set()
    for i in range(0, len(gids), 900):
        out.update(conn.execute(select(items.c.gid).where(
            items.c.gid.in_(gids[i: i + 900]), items.c.project_gid == project_gid,
            items.c.type == type_, items.c.is_new.is_(False),
            items.c.is_working_copy.is_(False))).scalars())
    return out


def check_refs(conn: Connection, project_gid: str, key: str, type_: str, value: Any
                ) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(g, str) for g in value) \
            or len(value) > MAX_REFS:
        raise ValidationError(f"{key} must be a list of gids", info={key: "invalid"})
    gids = list(dict.fromkeys(value))
    bad = [g for g in gids if g not in _committed_gids(conn, project_gid, type_, gids)]
    if bad:
        raise ValidationError(f"{key} must name committed {SCHEMA_DATA_KEYS[type_]} of this "
                              "project", info={key: bad[:20]})
    return gids


def _check_ref(conn: Connection, project_gid: str, key: str, type_: str, value: Any
               ) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValidationError(f"{key} must be a gid or null", info={key: "invalid"})
    if not _committed_gids(conn, project_gid, type_, [value]):
        raise ValidationError(f"{key} must name a committed {type_} of this project",
                              info={key: value})
    return value


def _check_body(type_: str, key: str, value: Any) -> Any:
    def need(ok: bool, what: str) -> None:
        if not ok:
            raise ValidationError(f"{key} must be {what}", info={key: "invalid"})

    if key in ("metadata", "options", "initial", "components"):
        need(isinstance(value, dict), "an object")
    elif key in ("is_localized", "is_required"):
        need(isinstance(value, bool), "true or false")
    elif key == "type":
        need(isinstance(value, str) and bool(TYPE_RE.match(value)) and len(value) <= 40,
             "a field type name")
    elif key in ("unit", "root"):
        need(value is None or (isinstance(value, str) and len(value) <= 200), "a string or null")
    return value


def _clean(conn: Connection, project: Project, type_: str, values: dict[str, Any]
           ) -> dict[str, Any]:
    """Validate ``values`` for an item of ``type_``; returns column values and ``body``
    updates (under the key ``"body"``).  Raises :class:`ValidationError`."""
    allowed = COLUMN_KEYS[type_] | set(BODY_DEFAULTS[type_])
    # null means "not given", except where null is a value (no layout, no title field…)
    values = {k: v for k, v in values.items() if v is not None or k in NULLABLE}
    unknown = set(values) - allowed
    if unknown:
        raise ValidationError(f"unknown property for a {type_}", info={"keys": sorted(unknown)})
    out: dict[str, Any] = {}
    body: dict[str, Any] = {}
    for key, value in values.items():
        if key == "name":
            out["name"] = _check_name(value)
        elif key == "label":
            out["label"] = _check_label(project, value)
        elif key == "classes":
            out["classes"] = check_refs(conn, project.gid, key, "class", value)
        elif key == "fields":
            out["fields"] = check_refs(conn, project.gid, key, "field", value)
        elif key == "layout":
            out["layout"] = _check_ref(conn, project.gid, key, "layout", value)
        elif key == "childdefinitions":
            body[key] = check_refs(conn, project.gid, key, "definition", value)
        elif key == "titlefield":
            body[key] = _check_ref(conn, project.gid, key, "field", value)
        else:
            body[key] = _check_body(type_, key, value)
    out["body"] = body
    return out


def _check_name_free(conn: Connection, project_gid: str, type_: str, name: str,
                     own: set[str]) -> None:
    """Refuse a name held by another committed item of the type (``own``: the item's own
    gids — itself and its original)."""
    if type_ not in NAMED_TYPES:
        return
    holders = set(conn.execute(select(items.c.gid).where(
        items.c.project_gid == project_gid, items.c.type == type_, items.c.name == name,
        items.c.is_new.is_(False), items.c.is_working_copy.is_(False))).scalars())
    if holders - own:
        raise ValidationError(f"name already in use by another {type_}", info={"name": name})


def _default_name(conn: Connection, project_gid: str, type_: str) -> str:
    """``unnamed_<type>``, numbered past the names items of the type already have."""
    base = f"unnamed_{'class' if type_ == 'class' else type_}"
    taken = set(conn.execute(select(items.c.name).where(
        items.c.project_gid == project_gid, items.c.type == type_,
        items.c.name.like(f"{base}%"))).scalars())
    if base not in taken:
        return base
    n = 2
    while f"{base}_{n}" in taken:
        n += 1
    return f"{base}_{n}"


# --- writes --------------------------------------------------------------------------------


def _insert(conn: Connection, values: dict[str, Any]) -> str:
    gid = values.get("gid") or str(uuid.uuid4())
    row = {
        "gid": gid, "is_new": True, "is_working_copy": False, "original": None,
        "is_base": False, "is_extended": False, "classes": [], "fields": [], "layout": None,
        "label": {}, "body": {}, **values,
    }
    row["gid"] = gid
    conn.execute(insert(items).values(**row))
    return gid


def create(conn: Connection, project: Project, *, type_: str, values: dict[str, Any]
           ) -> EditResult:
    """Create a new item (``is_new``).  A definition or class given no ``layout`` key gets a
    new layout of its own; ``"layout": null`` means none."""
    if type_ not in SCHEMA_TYPES:
        raise ValidationError("unknown schema item type", info={"type": type_})
    clean = _clean(conn, project, type_, values)
    name = clean.get("name") or _default_name(conn, project.gid, type_)
    _check_name_free(conn, project.gid, type_, name, set())
    now = time.time()
    changes: list[Change] = []
    if type_ in LAYOUT_OWNERS and "layout" not in values:
        layout_gid = _insert(conn, {
            "project_gid": project.gid, "type": "layout", "name": name,
            "label": clean.get("label", {}), "body": dict(BODY_DEFAULTS["layout"]),
            "created_on": now, "updated_on": now,
        })
        clean["layout"] = layout_gid
        changes.append(Change(layout_gid, "layout", "INSERT"))
    body = {**BODY_DEFAULTS[type_], **clean.pop("body")}
    gid = _insert(conn, {**clean, "project_gid": project.gid, "type": type_, "name": name,
                         "body": body, "created_on": now, "updated_on": now})
    changes.insert(0, Change(gid, type_, "INSERT"))
    return EditResult(gid, clean.get("layout"), tuple(changes))


def working_copy_of(conn: Connection, project_gid: str, gid: str) -> Any:
    """The (non-extended) working copy of the committed item ``gid``, or None."""
    return conn.execute(select(items).where(
        items.c.project_gid == project_gid, items.c.original == gid,
        items.c.is_working_copy.is_(True), items.c.is_extended.is_(False),
    ).order_by(items.c.id).limit(1)).first()


def copy_row(conn: Connection, row: Any, now: float, **extra: Any) -> str:
    """Insert a working copy of the committed ``row`` (same content, ``extra`` set on top,
    e.g. ``is_extended``); returns its gid."""
    return _insert(conn, {
        "project_gid": row.project_gid, "type": row.type, "name": row.name,
        "label": row.label or {}, "is_new": False, "is_working_copy": True,
        "original": row.gid, "is_base": row.is_base, "classes": row.classes or [],
        "fields": row.fields or [], "layout": row.layout, "body": row.body or {},
        "created_on": now, "updated_on": now, **extra,
    })


def _make_working_copy(conn: Connection, row: Any, *, copy_layout: bool, now: float
                       ) -> tuple[str, list[Change]]:
    """A working copy of the committed ``row``; for a definition or class also a working copy
    of its layout (or the layout's existing one), which the copy points at."""
    changes: list[Change] = []
    gid = copy_row(conn, row, now)
    changes.append(Change(gid, row.type, "INSERT"))
    if copy_layout and row.type in LAYOUT_OWNERS and row.layout:
        layout = conn.execute(select(items).where(items.c.gid == row.layout)).first()
        if layout is not None and is_committed(layout):
            existing = working_copy_of(conn, row.project_gid, layout.gid)
            if existing is not None:
                layout_copy = existing.gid
            else:
                layout_copy = copy_row(conn, layout, now)
                changes.append(Change(layout_copy, "layout", "INSERT"))
            conn.execute(update(items).where(items.c.gid == gid).values(layout=layout_copy))
    return gid, changes


def modify(conn: Connection, project: Project, *, type_: str, gid: str,
           values: dict[str, Any]) -> EditResult:
    """Change an item.  A committed item gets a working copy (or its existing one) that takes
    the change; a working copy or a new item changes in place.  ``label`` is merged per
    language; every other given key replaces its value."""
    row = find(conn, project.gid, type_, gid, lock=True)
    if row.is_extended:
        raise Unprocessable("An extended definition is modified through its record",
                            info={type_: gid})
    clean = _clean(conn, project, type_, values)
    now = time.time()
    changes: list[Change] = []
    if is_committed(row):
        target = working_copy_of(conn, project.gid, row.gid)
        if target is None:
            copy_gid, changes = _make_working_copy(conn, row, copy_layout="layout" not in clean,
                                                   now=now)
            target = conn.execute(select(items).where(items.c.gid == copy_gid)).one()
    else:
        target = row
    if "name" in clean:
        own = {target.gid, row.gid} | ({target.original} if target.original else set())
        _check_name_free(conn, project.gid, type_, clean["name"], own)
    body = {**(target.body or {}), **clean.pop("body")}
    new_values: dict[str, Any] = {**clean, "body": body, "updated_on": now}
    if "label" in clean:
        new_values["label"] = {**(target.label or {}), **clean["label"]}
    conn.execute(update(items).where(items.c.id == target.id).values(**new_values))
    if "layout" in clean and target.layout and target.layout != clean["layout"]:
        changes += _drop_orphan_layout(conn, project.gid, target.layout)
    if not any(c.gid == target.gid for c in changes):
        changes.insert(0, Change(target.gid, type_, "UPDATE"))
    layout = clean["layout"] if "layout" in clean else conn.execute(
        select(items.c.layout).where(items.c.id == target.id)).scalar()
    return EditResult(target.gid, layout, tuple(changes))


def _drop_orphan_layout(conn: Connection, project_gid: str, gid: str) -> list[Change]:
    """Remove a new or working-copy layout nothing points at any more (it was replaced)."""
    used = conn.execute(select(func.count()).where(
        items.c.project_gid == project_gid, items.c.layout == gid)).scalar_one()
    if used:
        return []
    gone = conn.execute(items.delete().where(
        items.c.gid == gid, items.c.project_gid == project_gid, items.c.type == "layout",
        or_(items.c.is_new.is_(True), items.c.is_working_copy.is_(True)))).rowcount
    return [Change(gid, "layout", "DELETE")] if gone else []


# --- bulk read -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BulkPage:
    rows: list[Any]
    total: int
    cursor: str | None


def _encode_cursor(offset: int) -> str:
    return cursors.encode([offset])


def _decode_cursor(value: str | None) -> int:
    if value is None or value == "":
        return 0
    (offset,) = cursors.decode(value, (int,), error=SelectionError)
    if offset < 0:
        raise SelectionError(cursors.INVALID)
    return int(offset)


#: Search results a schema selection entry may contribute (schema tables are small).
MAX_SEARCH_RESULTS = 100_000


def _candidates(conn: Connection, project_gid: str, selection: Selection) -> list[str]:
    """The selection's gids in order, each once (the ordered union).  A search entry stands
    for its whole result set in rank order, as it does when a job resolves it."""
    gids: list[str] = []
    for entry in selection.entries:
        if isinstance(entry, Gids):
            gids.extend(entry.gids)
        elif isinstance(entry, Search):
            ids = search_ids(conn, project_gid=project_gid, search=entry, kind="schema",
                             offset=0, limit=MAX_SEARCH_RESULTS)
            gids.extend(_gids_of(conn, ids))
        else:  # children entries: refused by the parser for schema selections
            raise SelectionError("schema items do not support children entries",
                                 entry=entry.index)
    return list(dict.fromkeys(gids))


def _gids_of(conn: Connection, ids: list[int]) -> list[str]:
    """Gids of schema item ids, in the same order."""
    gid_of: dict[int, str] = {}
    for i in range(0, len(ids), 900):
        rows = conn.execute(select(items.c.id, items.c.gid).where(
            items.c.id.in_(ids[i: i + 900])))
        gid_of.update((item_id, gid) for item_id, gid in rows)
    return [gid_of[i] for i in ids if i in gid_of]


def search(conn: Connection, project_gid: str, query: Search, *, top: int, size: int
           ) -> tuple[list[Any], int]:
    """A page of a schema search (``schema/search``) and the size of the whole result.  As
    in Unicat, a search with neither ``q`` nor ``filter`` finds nothing."""
    if not query.q and query.filter is None:
        return [], 0
    ids = search_ids(conn, project_gid=project_gid, search=query, kind="schema", offset=top,
                     limit=size)
    total = search_count(conn, project_gid=project_gid, search=query, kind="schema")
    return get(conn, project_gid, None, _gids_of(conn, ids)), total


def bulk_page(conn: Connection, project_gid: str, selection: Selection, *,
              cursor: str | None, size: int) -> BulkPage:
    """One page of a schema selection (``schema/bulk/get``).

    The page walks the selection's distinct gids in order from the cursor and keeps the ones
    that name an item of the project, until it holds ``size`` items or the selection ends.
    The cursor is a position in the *request's* gid list, not in the result, so items that
    appear or disappear between two calls never shift later pages.  ``total`` counts every
    item the whole selection names.  Raises :class:`SelectionError` for a bad cursor.
    """
    gids = _candidates(conn, project_gid, selection)
    offset = _decode_cursor(cursor)
    total = int(conn.execute(text(
        f"SELECT COUNT(*) FROM {dialect.json_rows(conn, 'gids')} "
        "JOIN schema_item s ON s.gid = j.value WHERE s.project_gid = :proj"
    ), {"gids": json.dumps(gids), "proj": project_gid}).scalar_one())
    rows: list[Any] = []
    pos = offset
    step = max(size, 100)
    while pos < len(gids) and len(rows) < size:
        chunk = gids[pos: pos + step]
        found = {r.gid: r for r in get(conn, project_gid, None, chunk)}
        for gid in chunk:
            pos += 1
            if gid in found:
                rows.append(found[gid])
                if len(rows) == size:
                    break
    return BulkPage(rows, total, _encode_cursor(pos) if pos < len(gids) else None)
