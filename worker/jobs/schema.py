"""Schema jobs: bulk commit, revert, save-as-new and copy of schema items (SPEC §5).

Each batch reads its items in one query, decides per item in Python (the per-item failures
of SPEC §5), then writes with a handful of set-based statements, whatever the batch size.
Every statement is guarded by the state it changes (``… AND is_working_copy = true``,
``… AND is_new = true``, copies under gids derived from the job token), so a batch run twice
is a no-op.  Nothing here commits: the runner commits each batch with the job's progress.

Selection: :func:`models.resolve.resolve_into` resolves a committed item that has a working
copy to that copy, so "commit/revert/save_as_new this definition" acts on its modification,
and copying it fails as "modified".  An item already gone when its batch runs (say, a layout
copy that was committed together with its definition earlier in the job) is skipped: it is
neither processed nor failed.

Layouts go with their owners.  A definition's or class's working copy points at a working
copy of the layout; committing the owner commits that layout copy into the original layout,
reverting it drops the layout copy (unless another item's working copy still points at it),
saving it as new makes the layout copy new too (or a new duplicate when the layout copy is
shared), and copying an owner copies its layout.  Whenever a layout working copy goes away,
every item pointing at it is pointed at its original (and records using a definition working
copy that goes away use the original).

Plans: a batch's statements start from its own rows (``c.id IN :ids``, the items read
under the job's project) and reach what they change through an index: originals by
``gid``, items pointing at a layout by ``(layout, project_gid)``, records using a definition
by ``(definition, project_gid)``.  The target's project is matched to the batch row's
(``… .project_gid = c.project_gid``), not to the ``:proj`` parameter: a constant project
term lets SQLite, which has no statistics, start from the project's range of items and
probe the batch for each of them (every schema item of the project, per batch: about 2 s
for a batch of 1,000 fields among 20,000 items).

Sync notifications: each batch notes what it changed (``ctx.effects.changed``) and the
runner appends the events to the project space after the batch commits (SPEC §7; a client
refetches on a notification and must not read the pre-commit state): ``definitions``,
``classes``, ``fields`` and ``layouts`` events, ``UPDATE`` for originals that took a working
copy, items that were committed, saved as new or pointed at another layout, ``DELETE`` for
removed working copies and new items, ``INSERT`` for copies and duplicated layouts — only
for rows a statement actually wrote (``RETURNING``, or the gids found before and after an
insert), so a batch run twice notes nothing the second time.  Schema events go out whatever
``RECORD_EVENTS`` says (it is for very large record jobs; schema jobs change a handful of
items); records moved off a removed definition copy get ``records`` ``UPDATE`` events when
record events are on.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import Connection, bindparam, text

from models.dialect import ids_param, is_pg
from models.queries import SCHEMA_DATA_KEYS
from models.schema_editing import LAYOUT_OWNERS, NAMED_TYPES, is_committed
from worker.jobs.base import Context, Failure

EXTENDED = "extended definitions cannot be {}; use the records/definition api"
NOT_MODIFIED = "not modified: the item has no working copy"
COPY_SUFFIX = "_copy"

_COLUMNS = ("id, gid, type, name, is_new, is_working_copy, original, is_extended, layout")


def _rows(conn: Connection, ctx: Context, ids: Sequence[int]) -> list[Any]:
    """The batch's items that still exist, in batch order."""
    rows = _of_project(ctx, conn.execute(ids_param(conn,
        f"SELECT {_COLUMNS}, project_gid FROM schema_item WHERE id IN :ids"
    ), {"ids": list(ids)}))
    order = {item_id: n for n, item_id in enumerate(ids)}
    return sorted(rows, key=lambda r: order[r.id])


def _by_gid(conn: Connection, ctx: Context, gids: Iterable[str]) -> dict[str, Any]:
    wanted = sorted({g for g in gids if g})
    if not wanted:
        return {}
    rows = _of_project(ctx, conn.execute(text(
        f"SELECT {_COLUMNS}, project_gid FROM schema_item WHERE gid IN :gids"
    ).bindparams(_expanding("gids")), {"gids": wanted}))
    return {r.gid: r for r in rows}


def _of_project(ctx: Context, rows: Iterable[Any]) -> list[Any]:
    """The rows of the job's project.  Checked here rather than with ``project_gid =
    :proj`` in the lookup: SQLite, without statistics, would read the project's range of
    items for that term and test each against the batch's ids or gids."""
    return [r for r in rows if r.project_gid == ctx.project_gid]


def _referrers(conn: Connection, ctx: Context, layouts: Iterable[str]) -> dict[str, set[int]]:
    """For each layout gid, the ids of the items pointing at it."""
    wanted = sorted(set(layouts))
    out: dict[str, set[int]] = {g: set() for g in wanted}
    if wanted:
        rows = conn.execute(text(
            "SELECT layout, id FROM schema_item WHERE layout IN :gids AND project_gid = :proj"
        ).bindparams(_expanding("gids")), {"gids": wanted, "proj": ctx.project_gid})
        for layout, item_id in rows:
            out[layout].add(item_id)
    return out


def _expanding(name: str) -> Any:
    return bindparam(name, expanding=True)


class _Changes:
    """A batch's schema changes, noted on ``ctx.effects`` once the batch has decided them:
    an item both updated and removed in one batch is announced removed only."""

    def __init__(self) -> None:
        self.updated: dict[str, str] = {}  # gid -> type, in the order written
        self.deleted: dict[str, str] = {}
        self.inserted: dict[str, str] = {}

    def add(self, into: dict[str, str], rows: Iterable[Any]) -> None:
        for gid, type_ in rows:
            into.setdefault(gid, type_)

    def note(self, ctx: Context) -> None:
        for action, found in (("INSERT", self.inserted), ("UPDATE", {
                g: t for g, t in self.updated.items() if g not in self.deleted}),
                              ("DELETE", self.deleted)):
            by_type: dict[str, list[str]] = {}
            for gid, type_ in found.items():
                by_type.setdefault(type_, []).append(gid)
            for type_, gids in by_type.items():
                ctx.effects.changed(action, gids, data_type=SCHEMA_DATA_KEYS[type_])


def _existing(conn: Connection, gids: Iterable[str]) -> set[str]:
    wanted = sorted(set(gids))
    if not wanted:
        return set()
    return set(conn.execute(text("SELECT gid FROM schema_item WHERE gid IN :gids")
                            .bindparams(_expanding("gids")), {"gids": wanted}).scalars())


def derived_gid(token: str, *parts: str) -> str:
    """A gid derived from the job token and what it is made from: a re-run of a batch finds
    the rows it made instead of making them again.  (UUID4-shaped, from a UUID5 hash.)"""
    digest = uuid.uuid5(uuid.NAMESPACE_URL, "bulkjobs:" + "/".join((token, *parts)))
    return str(uuid.UUID(bytes=digest.bytes, version=4))


def _records_to_originals(conn: Connection, ctx: Context, copies: dict[int, Any]) -> None:
    """Records using a definition working copy that goes away use its original instead.

    (Records should only ever use committed definitions, but ``records/create`` accepts any
    definition gid; this keeps them from pointing at a removed row.)"""
    definition_copies = [i for i, r in copies.items()
                         if r.type == "definition" and r.is_working_copy]
    if definition_copies:
        moved = conn.execute(ids_param(conn,
            "UPDATE record SET definition = c.original FROM schema_item AS c "
            "WHERE c.id IN :ids AND c.is_working_copy = true AND c.original IS NOT NULL "
            "AND record.definition = c.gid AND record.project_gid = c.project_gid"
            + ctx.effects.returning()
        ), {"ids": definition_copies})
        if ctx.effects.collect_events:
            ctx.effects.changed("UPDATE", moved.scalars())


def _repoint_to_originals(conn: Connection, ctx: Context, layout_copy_ids: list[int]
                          ) -> Sequence[Any]:
    """Items pointing at these layout working copies point at their originals instead;
    returns their ``(gid, type)``."""
    if not layout_copy_ids:
        return []
    return conn.execute(ids_param(conn,
        "UPDATE schema_item SET layout = c.original FROM schema_item AS c "
        "WHERE c.id IN :ids AND c.type = 'layout' AND c.is_working_copy = true "
        "AND c.original IS NOT NULL AND schema_item.layout = c.gid "
        "AND schema_item.project_gid = c.project_gid RETURNING schema_item.gid, schema_item.type"
    ), {"ids": layout_copy_ids}).all()


# --- commit --------------------------------------------------------------------------------


def commit_batch(conn: Connection, ctx: Context, ids: Sequence[int]) -> list[Failure]:
    """Apply each working copy to its original (which keeps its gid) and remove the copy;
    a new item becomes committed.  An owner's layout copy (or new layout) is committed with
    it.  Fails per item: extended definitions, unmodified items, a copy whose original is
    gone, and a name another committed item of the type holds (names are checked against the
    committed items as they were before the batch; the first item of the batch claiming a
    name wins)."""
    failures: list[Failure] = []
    candidates: list[Any] = []
    for row in _rows(conn, ctx, ids):
        if row.is_extended:
            failures.append(Failure(row.gid, EXTENDED.format("committed")))
        elif is_committed(row):
            failures.append(Failure(row.gid, NOT_MODIFIED))
        else:
            candidates.append(row)
    layouts = _by_gid(conn, ctx, (r.layout for r in candidates if r.type in LAYOUT_OWNERS))
    originals = _by_gid(conn, ctx, [r.original for r in candidates if r.is_working_copy]
                        + [r.original for r in layouts.values() if r.is_working_copy])
    holders = _name_holders(conn, ctx, [r for r in candidates if r.type in NAMED_TYPES])
    claimed: dict[tuple[str, str], str] = {}
    copies: dict[int, Any] = {}
    news: dict[int, Any] = {}
    for row in candidates:
        if row.is_working_copy and row.original not in originals:
            failures.append(Failure(row.gid, "the original no longer exists"))
            continue
        own = row.original if row.is_working_copy else row.gid
        if row.type in NAMED_TYPES:
            key = (row.type, row.name)
            if holders.get(key, set()) - {own} or claimed.get(key, own) != own:
                failures.append(Failure(row.gid, f"name {row.name!r} already in use by "
                                                 f"another {row.type}"))
                continue
            claimed[key] = own
        (copies if row.is_working_copy else news)[row.id] = row
        layout = layouts.get(row.layout or "")
        if row.type in LAYOUT_OWNERS and layout is not None and not is_committed(layout):
            if layout.is_working_copy and layout.original in originals:
                copies[layout.id] = layout
            elif layout.is_new:
                news[layout.id] = layout
    changes = _Changes()
    if copies:
        # Originals take the copies' content; ``is_base`` and ``created_on`` stay theirs.
        changes.add(changes.updated, conn.execute(ids_param(conn,
            "UPDATE schema_item SET name = c.name, label = c.label, classes = c.classes, "
            "fields = c.fields, layout = c.layout, body = c.body, updated_on = :now "
            "FROM schema_item AS c WHERE c.id IN :ids AND c.is_working_copy = true "
            "AND schema_item.gid = c.original AND schema_item.project_gid = c.project_gid "
            "RETURNING schema_item.gid, schema_item.type"
        ), {"ids": list(copies), "now": ctx.now}))
        # Originals that just took a layout copy's gid, and other owners' copies sharing
        # it, now point at the committed layout.
        changes.add(changes.updated, _repoint_to_originals(
            conn, ctx, [i for i, r in copies.items() if r.type == "layout"]))
        _records_to_originals(conn, ctx, copies)
        changes.add(changes.deleted, conn.execute(ids_param(conn,
            "DELETE FROM schema_item WHERE id IN :ids AND is_working_copy = true "
            "RETURNING gid, type"
        ), {"ids": list(copies)}))
    if news:
        changes.add(changes.updated, conn.execute(ids_param(conn,
            "UPDATE schema_item SET is_new = false, updated_on = :now "
            "WHERE id IN :ids AND is_new = true RETURNING gid, type"
        ), {"ids": list(news), "now": ctx.now}))
    changes.note(ctx)
    return failures


def _name_holders(conn: Connection, ctx: Context, rows: list[Any]
                  ) -> dict[tuple[str, str], set[str]]:
    """``(type, name) -> gids`` of the committed items holding the names of ``rows``."""
    names = sorted({r.name for r in rows})
    if not names:
        return {}
    found = conn.execute(text(
        "SELECT type, name, gid FROM schema_item WHERE project_gid = :proj "
        "AND name IN :names AND is_new = false AND is_working_copy = false"
    ).bindparams(_expanding("names")), {"proj": ctx.project_gid, "names": names})
    out: dict[tuple[str, str], set[str]] = {}
    for type_, name, gid in found:
        out.setdefault((type_, name), set()).add(gid)
    return out


# --- revert --------------------------------------------------------------------------------


def revert_batch(conn: Connection, ctx: Context, ids: Sequence[int]) -> list[Failure]:
    """Drop working copies (the originals stay as they are) and remove new items; an owner's
    layout copy or new layout goes with it unless another item still points at it.  Fails
    per item: extended definitions, unmodified items, a new layout other items use, and a new
    definition records use."""
    failures: list[Failure] = []
    candidates: list[Any] = []
    for row in _rows(conn, ctx, ids):
        if row.is_extended:
            failures.append(Failure(row.gid, EXTENDED.format("reverted")))
        elif is_committed(row):
            failures.append(Failure(row.gid, NOT_MODIFIED))
        else:
            candidates.append(row)
    in_use = _definitions_in_use(conn, ctx, [r.gid for r in candidates
                                             if r.type == "definition" and r.is_new])
    remove: dict[int, Any] = {}
    for row in candidates:
        if row.gid in in_use:
            failures.append(Failure(row.gid, "the new definition is used by records"))
        else:
            remove[row.id] = row
    owned = _by_gid(conn, ctx, (r.layout for r in remove.values() if r.type in LAYOUT_OWNERS))
    new_layouts = [r for r in remove.values() if r.type == "layout" and r.is_new]
    refs = _referrers(conn, ctx, [*owned, *(r.gid for r in new_layouts)])
    # A new layout has no original to fall back on: it cannot go while something else
    # (not being removed here) points at it.
    for row in new_layouts:
        if refs[row.gid] - set(remove):
            failures.append(Failure(row.gid, "the new layout is used by another schema item"))
            del remove[row.id]
    for layout in owned.values():
        if not is_committed(layout) and not layout.is_extended and refs[layout.gid] <= set(remove):
            remove[layout.id] = layout
    changes = _Changes()
    if remove:
        changes.add(changes.updated, _repoint_to_originals(
            conn, ctx, [i for i, r in remove.items() if r.type == "layout" and r.is_working_copy]))
        _records_to_originals(conn, ctx, remove)
        changes.add(changes.deleted, conn.execute(ids_param(conn,
            "DELETE FROM schema_item WHERE id IN :ids AND is_extended = false "
            "AND (is_new = true OR is_working_copy = true) RETURNING gid, type"
        ), {"ids": list(remove)}))
    changes.note(ctx)
    return failures


def _definitions_in_use(conn: Connection, ctx: Context, gids: list[str]) -> set[str]:
    if not gids:
        return set()
    return set(conn.execute(text(
        "SELECT DISTINCT definition FROM record WHERE project_gid = :proj "
        "AND definition IN :gids"
    ).bindparams(_expanding("gids")), {"proj": ctx.project_gid, "gids": gids}).scalars())


# --- save as new ---------------------------------------------------------------------------


def _duplicate_sql(conn: Connection) -> str:
    """Copy the rows ``{gid, src, suffix, layout}`` of the JSON parameter ``:rows`` in one
    statement, each source under the gid the batch chose for it; the NOT EXISTS guard makes a
    re-run (with the same derived gids) insert nothing.  The copies get ids in the order of
    ``:rows``.  On SQLite ``CROSS JOIN`` keeps the batch's rows first: a constant project term
    would otherwise let it start from the project's range of items."""
    join = "JOIN" if is_pg(conn) else "CROSS JOIN"
    rows = _json_rows(conn)
    gid, src, suffix, layout = (_json_field(conn, k) for k in ("gid", "src", "suffix", "layout"))
    return (
        "INSERT INTO schema_item (gid, project_gid, type, name, label, is_new, "
        "is_working_copy, original, is_base, is_extended, classes, fields, layout, body, "
        f"created_on, updated_on) SELECT {gid}, s.project_gid, s.type, s.name || {suffix}, "
        f"s.label, true, false, NULL, false, false, s.classes, s.fields, {layout}, s.body, "
        f":now, :now FROM {rows} {join} schema_item AS s ON s.gid = {src} "
        "WHERE s.project_gid = :proj "
        f"AND NOT EXISTS (SELECT 1 FROM schema_item AS x WHERE x.gid = {gid}) ORDER BY j.key"
    )


def _json_rows(conn: Connection) -> str:
    """The JSON array parameter ``:rows`` as rows ``j.value`` (an object) ordered by
    ``j.key``."""
    if is_pg(conn):
        return "jsonb_array_elements(CAST(:rows AS jsonb)) WITH ORDINALITY AS j(value, key)"
    return "json_each(:rows) AS j"


def _json_field(conn: Connection, key: str) -> str:
    """The text under ``key`` of the JSON object ``j.value`` (NULL for a JSON null)."""
    if is_pg(conn):
        return f"(j.value ->> '{key}')"
    return f"json_extract(j.value, '$.{key}')"


def save_as_new_batch(conn: Connection, ctx: Context, ids: Sequence[int]) -> list[Failure]:
    """Turn each working copy into a new item of its own (``is_new``, no ``original``); the
    original is untouched.  An owner's layout copy becomes new with it, or, when another
    item's working copy shares it, the owner gets a new duplicate of it.  Fails per item:
    extended definitions, unmodified items and new items (they are saved by committing)."""
    failures: list[Failure] = []
    convert: dict[int, Any] = {}
    for row in _rows(conn, ctx, ids):
        if row.is_extended:
            failures.append(Failure(row.gid, EXTENDED.format("saved as new")))
        elif is_committed(row):
            failures.append(Failure(row.gid, NOT_MODIFIED))
        elif row.is_new:
            failures.append(Failure(row.gid, "not a working copy: a new item is saved by "
                                             "committing it"))
        else:
            convert[row.id] = row
    owned = {g: r for g, r in _by_gid(conn, ctx, (
        r.layout for r in convert.values() if r.type in LAYOUT_OWNERS)).items()
        if r.is_working_copy and not r.is_extended}
    refs = _referrers(conn, ctx, owned)
    duplicates: list[dict[str, Any]] = []
    repoint: list[dict[str, Any]] = []
    for layout in owned.values():
        savers = refs[layout.gid] & set(convert)
        if refs[layout.gid] <= set(convert):
            convert[layout.id] = layout
        else:
            dup = derived_gid(ctx.token, "save_as_new", layout.gid)
            duplicates.append({"gid": dup, "src": layout.gid, "suffix": "", "layout": None})
            repoint += [{"id": i, "layout": dup} for i in sorted(savers)]
    changes = _Changes()
    if duplicates:
        changes.add(changes.inserted, _insert_copies(conn, ctx, duplicates,
                                                     ["layout"] * len(duplicates)))
        _point_at(conn, repoint)
    if convert:
        changes.add(changes.updated, conn.execute(ids_param(conn,
            "UPDATE schema_item SET is_new = true, is_working_copy = false, original = NULL, "
            "updated_on = :now WHERE id IN :ids AND is_working_copy = true RETURNING gid, type"
        ), {"ids": list(convert), "now": ctx.now}))
    changes.note(ctx)
    return failures


def _point_at(conn: Connection, repoint: list[dict[str, Any]]) -> None:
    """Point the working copies ``{id, layout}`` at their layouts, in one statement (each
    copy found by its id) rather than one per copy."""
    item_id = (f"CAST({_json_field(conn, 'id')} AS INTEGER)" if is_pg(conn)
               else _json_field(conn, "id"))
    conn.execute(text(
        f"UPDATE schema_item SET layout = {_json_field(conn, 'layout')} FROM {_json_rows(conn)} "
        f"WHERE schema_item.id = {item_id} AND schema_item.is_working_copy = true"
    ), {"rows": json.dumps(repoint)})


def _insert_copies(conn: Connection, ctx: Context, copies: list[dict[str, Any]],
                   types: list[str]) -> list[tuple[str, str]]:
    """Insert the ``copies`` (``{gid, src, suffix, layout}``) with one statement (see
    :func:`_duplicate_sql`); returns ``(gid, type)`` of the rows it inserted (not those a
    re-run found already there, nor copies of a missing source)."""
    gids = [c["gid"] for c in copies]
    before = _existing(conn, gids)
    conn.execute(text(_duplicate_sql(conn)), {
        "rows": json.dumps(copies), "now": ctx.now, "proj": ctx.project_gid})
    made = _existing(conn, gids) - before
    return [(g, t) for g, t in zip(gids, types, strict=True) if g in made]


# --- copy ----------------------------------------------------------------------------------


def copy_batch(conn: Connection, ctx: Context, ids: Sequence[int]) -> list[Failure]:
    """Copy committed items: each copy is new, named ``<name>_copy``, and must be committed
    before use; a definition's or class's copy gets a new copy of the layout.  Fails per
    item: extended definitions, modified items (working copies) and new items."""
    failures: list[Failure] = []
    params: list[dict[str, Any]] = []
    types: list[str] = []
    for row in _rows(conn, ctx, ids):
        if row.is_extended:
            failures.append(Failure(row.gid, EXTENDED.format("copied")))
        elif row.is_working_copy:
            failures.append(Failure(row.gid, "modified items cannot be copied; commit or "
                                             "revert the working copy first"))
        elif row.is_new:
            failures.append(Failure(row.gid, "new items cannot be copied; commit it first"))
        else:
            layout = None
            if row.type in LAYOUT_OWNERS and row.layout:
                layout = derived_gid(ctx.token, "copy", row.gid, "layout")
                params.append({"gid": layout, "src": row.layout, "suffix": COPY_SUFFIX,
                               "layout": None})
                types.append("layout")
            params.append({"gid": derived_gid(ctx.token, "copy", row.gid), "src": row.gid,
                           "suffix": COPY_SUFFIX, "layout": layout})
            types.append(row.type)
    if params:
        changes = _Changes()
        changes.add(changes.inserted, _insert_copies(conn, ctx, params, types))
        changes.note(ctx)
    return failures
