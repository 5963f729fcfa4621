"""Record jobs: bulk delete, bulk undelete and permanent delete, with subtree semantics.

Deletion gives a record and every live record of its subtree a
:class:`~models.records.RecordDeletion` row stamped with the record's id in ``deleted_root``
(the delete generation); links pointing into the subtree go with it under the same stamp.
Undeletion removes exactly the rows carrying the stamp (one range of the ``deleted_root``
index), so records that had been deleted on their own before stay deleted.  The record rows
themselves are not written: their ``status`` is what they return to.  Both are a handful of
set-based statements per batch, whatever the subtree sizes.

Each successfully processed item gets one workflow entry (on the selected record; it stands
for the whole subtree change).

Permanent deletion removes a deleted record's whole subtree (whatever generation each row
belongs to), every link pointing at a removed record (whatever the link's own state: even a
link undeleted separately), and their versions, workflow entries and search entries; each
removed row leaves a :class:`~models.records.RecordTombstone`, and the parent's
``childcount`` goes down.  Only the root of a delete generation can be removed: a record
deleted as part of an ancestor's deletion fails per item ("deleted with an ancestor"), as it
does for undelete — the generation is the unit the user deleted and can restore.  Items are
taken deepest first (:func:`deepest_first`), so a generation root selected together with an
enclosing one is removed by its own item, wherever the batches fall.  A gid that
was permanently deleted before fails per item with "permanently deleted" in undelete and
permanent delete alike (its tombstone is resolved as a job item with a negative id), and so
does, in delete, undelete and permanent delete, an item whose record a concurrent job removed
after this job resolved its selection.

Concurrency (PostgreSQL; SQLite serialises writers): every batch first locks what decides
its items' outcome, in id order, and reads their state after that, so the set statements
that follow take their snapshot after a concurrent job's conflicting batch has committed,
and each record ends in one well-defined state:

* delete and permanent delete lock the records they were given (``FOR UPDATE``), and
  permanent delete also their deletion rows;
* undelete locks its items' deletion rows (``FOR UPDATE``; an undelete or a permanent delete
  that got there first has removed them, and the item then reads as not deleted or gone),
  and the ancestors it checks (``FOR SHARE``), which a delete or permanent delete of an
  ancestor locks ``FOR UPDATE``.  It leaves the wide record rows unwritten, locks included;
* two deletions reaching the same descendant meet on the ``record_deletion`` primary key:
  the second waits for the first and keeps its stamp (``ON CONFLICT DO NOTHING``).

Changed gids are noted for record events (``ctx.effects``): soft and permanent deletes as
``DELETE``, undeletes and parents whose ``childcount`` changed as ``UPDATE``.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, text

from models import dialect
from models.dialect import ids_param, is_pg
from models.history import write_workflow
from models.records import subtree_upper
from models.resolve import gid_rows, reorder_items
from models.search.index import unindex
from models.selection import Failed, Gids, Selection
from worker.jobs.base import Context, Failure, Result, error_result

PERMANENTLY_DELETED = "permanently deleted"


def _for_update(conn: Connection) -> str:
    """Row locks for the records a batch was given (PostgreSQL; SQLite writers are already
    serialised by ``BEGIN IMMEDIATE``)."""
    return " ORDER BY r.id FOR UPDATE OF r" if is_pg(conn) else ""


def _lock_deletions(conn: Connection, ids: Sequence[int]) -> None:
    """Lock the deletion rows of the given records (PostgreSQL), waiting for a concurrent
    batch that holds them; rows it removed are then simply gone."""
    if is_pg(conn):
        conn.execute(ids_param(conn, "SELECT record_id FROM record_deletion "
                               "WHERE record_id IN :ids ORDER BY record_id FOR UPDATE"),
                     {"ids": list(ids)})


def _deleted_rows(conn: Connection, ids: Sequence[int]) -> Sequence[Any]:
    """:data:`_DELETED_ROWS`, their deletion rows locked (PostgreSQL) as
    :func:`_lock_deletions` does, in one statement."""
    lock = " ORDER BY d.record_id FOR UPDATE OF d" if is_pg(conn) else ""
    return conn.execute(ids_param(conn, _DELETED_ROWS + lock), {"ids": list(ids)}).all()


#: A batch's records with their delete generation (``NULL`` when live).
#: (The generation is a scalar subquery, one primary-key lookup per record: as a join,
#: PostgreSQL would hash the whole deletion table for a batch of a thousand ids.)
_ROWS = ("SELECT r.id, r.gid, r.parent_id, r.mpath, (SELECT d.deleted_root FROM "
         "record_deletion d WHERE d.record_id = r.id) AS deleted_root FROM record r "
         "WHERE r.id IN :ids")
#: The deleted ones of a batch's records, with their delete generation and own status.
_DELETED_ROWS = ("SELECT d.record_id AS id, r.gid, r.parent_id, r.mpath, d.deleted_root, "
                 "r.status FROM record_deletion d JOIN record r ON r.id = d.record_id "
                 "WHERE d.record_id IN :ids")


def _ranges(conn: Connection, *, with_id: bool = False) -> str:
    """The JSON parameter ``:roots`` (``[{"id"?, "lo", "hi"}, …]``, subtree ranges of
    ``mpath``) as rows ``b.lo``, ``b.hi`` (and ``b.id``)."""
    cols = (["id"] if with_id else []) + ["lo", "hi"]
    if is_pg(conn):
        types = ", ".join(f"{c} {'integer' if c == 'id' else 'text'}" for c in cols)
        return f"jsonb_to_recordset(CAST(:roots AS jsonb)) AS b({types})"
    fields = ", ".join(f"json_extract(value, '$.{c}') AS {c}" for c in cols)
    return f"(SELECT {fields} FROM json_each(:roots)) AS b"


#: A record's gid by id, as a subquery: one primary-key lookup per row whatever the planner
#: estimates (a join of 100,000 ids made PostgreSQL merge them with the whole primary key).
_GID_OF = "(SELECT r.gid FROM record r WHERE r.id = {})"


def _note_gids(conn: Connection, ctx: Context, action: str, gids: str | None) -> None:
    """Note records given as their gids joined by spaces (:func:`dialect.joined`)."""
    if gids:
        ctx.effects.changed(action, gids.split(" "))


def _split(ids: Sequence[int]) -> tuple[list[int], list[int]]:
    """Record ids, and tombstone ids (job items ``< 0``, see :func:`add_tombstoned`)."""
    return [i for i in ids if i > 0], [-i for i in ids if i < 0]


def _tombstone_failures(conn: Connection, tombstone_ids: list[int]) -> list[Failure]:
    if not tombstone_ids:
        return []
    gids = conn.execute(ids_param(
        conn, "SELECT gid FROM record_tombstone WHERE id IN :ids ORDER BY id"
    ), {"ids": tombstone_ids}).scalars()
    return [Failure(g, PERMANENTLY_DELETED) for g in gids]


def _vanished_failures(conn: Connection, record_ids: Sequence[int], rows: Sequence[Any]
                       ) -> list[Failure]:
    """Items whose record vanished since resolution: a concurrent job (or an ancestor's
    removal) permanently deleted it.  They fail as "permanently deleted" — the record is in
    that state, but not by this item."""
    vanished = sorted(set(record_ids) - {r.id for r in rows})
    if not vanished:
        return []
    return [Failure(g, PERMANENTLY_DELETED) for g in conn.execute(ids_param(conn,
        "SELECT gid FROM record_tombstone WHERE record_id IN :ids ORDER BY id"
    ), {"ids": vanished}).scalars()]


def delete_batch(conn: Connection, ctx: Context, ids: Sequence[int]) -> list[Failure]:
    """Delete each item with its subtree (and links into it) as one delete generation.

    Selected records nested in one another end the same whether they meet in one batch or
    in several: the outermost starts the generation and the others go down with it.  Within
    a batch that is decided below (``tops``); across batches the items come parents first
    (:func:`delete_prepare`), so an ancestor is always deleted before its descendants are
    reached, and a record this job already deleted with an ancestor counts as done.  This
    job's deletions are known by the workflow entries it wrote (their ``job_token``); a
    single-record delete (no token) has none, so everything deleted before it is "already
    deleted"."""
    comment = f"bulk job {ctx.token}"
    job_token = ctx.token or None
    rows = conn.execute(ids_param(conn, _ROWS + _for_update(conn)), {"ids": list(ids)}).all()
    failures = _vanished_failures(conn, ids, rows)
    ok: dict[int, str] = {}
    gone_with = _deleted_by_job(conn, job_token,
                                {r.deleted_root for r in rows if r.deleted_root})
    went_down: list[int] = []
    for rid, gid, parent_id, mpath, deleted_root in rows:
        if deleted_root in gone_with and deleted_root != rid:
            went_down.append(rid)  # deleted with an ancestor selected in this job
        elif deleted_root is not None:
            failures.append(Failure(gid, "already deleted"))
        elif parent_id is None:
            failures.append(Failure(gid, "the root record cannot be deleted"))
        else:
            ok[rid] = mpath
    # A selected record inside another selected record's subtree is deleted with it; only the
    # outermost ones start a delete generation.
    tops = [rid for rid, mpath in ok.items()
            if not any(int(a) in ok for a in mpath.strip("/").split("/")[:-1])]
    write_workflow(conn, went_down, action="delete", actor=ctx.actor, now=ctx.now,
                   comment=comment, state_sql="'deleted'", job_token=job_token)
    tops = _claim(conn, ctx, tops, ok, rows, failures)
    if not tops:
        return failures
    roots = json.dumps([{"id": rid, "lo": ok[rid], "hi": subtree_upper(ok[rid])} for rid in tops])
    # Each top's subtree is one range of the mpath index (a subtree never leaves its
    # project, so no project condition: it would tempt a planner into a project-wide
    # range).  Rows that are deleted already keep their own generation (ON CONFLICT).
    _insert_deletions(conn, ctx, "r.id", "b.id", "r.gid",
                      f"{_ranges(conn, with_id=True)} CROSS JOIN record r "
                      "WHERE r.mpath >= b.lo AND r.mpath < b.hi", {"roots": roots})
    # Links pointing at anything just deleted are deleted in the same generation: one range
    # of the generation index per top, one ``canonical_id`` lookup per row in it (the CROSS
    # JOINs keep SQLite in that order rather than scanning every record or deletion row).
    _insert_deletions(conn, ctx, "l.id", "t.deleted_root", "l.gid",
                      f"{dialect.id_rows(conn, 'ids')} CROSS JOIN record_deletion t "
                      "CROSS JOIN record l WHERE t.deleted_root = j.value "
                      "AND l.canonical_id = t.record_id AND l.is_link = true",
                      {"ids": dialect.json_ids(tops)})
    write_workflow(conn, list(ok), action="delete", actor=ctx.actor, now=ctx.now,
                   comment=comment, state_sql="'deleted'", job_token=job_token)
    return failures


def _insert_deletions(conn: Connection, ctx: Context, record: str, root: str, gid: str,
                      source: str, args: dict[str, Any]) -> None:
    """``INSERT INTO record_deletion`` the rows ``SELECT <record>, <root> FROM <source>``
    that are not deleted yet (those that are keep their generation), noting the gids
    (``gid``) of the rows it inserts for record events as one text from the database: no
    row per record comes back to Python.

    PostgreSQL aggregates the insert's ``RETURNING`` (a row that a concurrent deletion took
    first stays that deletion's, and is not noted here).  SQLite cannot aggregate a
    ``RETURNING`` clause: the gids of the rows about to be inserted are read first, in the
    same write transaction (which holds SQLite's write lock: exactly those rows), by the
    insert's own plan with a primary-key check of ``record_deletion`` per row."""
    insert = (f"INSERT INTO record_deletion (record_id, deleted_root) SELECT {record}, {root} "
              f"FROM {source} ON CONFLICT (record_id) DO NOTHING")
    _write_noting(conn, ctx, "DELETE", insert, args, sqlite_gids=(
        f"SELECT {dialect.joined(conn, gid)} FROM {source} AND NOT EXISTS "
        f"(SELECT 1 FROM record_deletion d WHERE d.record_id = {record})"))


def _write_noting(conn: Connection, ctx: Context, action: str, statement: str,
                  args: dict[str, Any], *, sqlite_gids: str) -> None:
    """Run ``statement`` (an insert into or a delete from ``record_deletion``), noting the
    gids of the records it changes for record events (``action``) as one text from the
    database: no row per record comes back to Python.  PostgreSQL aggregates the
    statement's ``RETURNING record_id`` in a CTE, a primary-key lookup of each gid; SQLite
    cannot aggregate a ``RETURNING`` clause, so ``sqlite_gids`` (a ``SELECT`` of the joined
    gids of exactly the rows the statement will change) runs first, in the same write
    transaction, which holds SQLite's write lock."""
    if not ctx.effects.collect_events:
        conn.execute(text(statement), args)
    elif is_pg(conn):
        _note_gids(conn, ctx, action, conn.execute(text(
            f"WITH changed AS ({statement} RETURNING record_id) SELECT "
            f"{dialect.joined(conn, _GID_OF.format('changed.record_id'))} FROM changed"
        ), args).scalar_one())
    else:
        _note_gids(conn, ctx, action, conn.execute(text(sqlite_gids), args).scalar_one())
        conn.execute(text(statement), args)

def _claim(conn: Connection, ctx: Context, tops: list[int], ok: dict[int, str],
           rows: Sequence[Any], failures: list[Failure]) -> list[int]:
    """Give each top its own deletion row first; returns the tops that got one.

    A top that a concurrent job's deletion reached in the meantime (its subtree statement
    took the row first; this statement waits for that job's commit) is already deleted, and
    so are the items nested in it: they fail, and ``ok`` loses them.  Claiming the tops
    before anything else is what keeps a generation whole when two jobs delete nested
    records at once: whichever job holds the top's row, the other one's subtree statement
    waits for it and then leaves that whole subtree to it."""
    claimed = set(conn.execute(ids_param(conn,
        "INSERT INTO record_deletion (record_id, deleted_root) SELECT r.id, r.id FROM record r "
        "WHERE r.id IN :ids ON CONFLICT (record_id) DO NOTHING RETURNING record_id"
    ), {"ids": tops}).scalars())
    lost = set(tops) - claimed
    if lost:
        gid_of = {r.id: r.gid for r in rows}
        for rid, mpath in list(ok.items()):
            if rid in lost or any(int(a) in lost for a in mpath.strip("/").split("/")[:-1]):
                failures.append(Failure(gid_of[rid], "already deleted"))
                del ok[rid]
    if ctx.effects.collect_events:
        ctx.effects.changed("DELETE", [r.gid for r in rows if r.id in claimed])
    return [rid for rid in tops if rid in claimed]


def _deleted_by_job(conn: Connection, job_token: str | None, roots: set[int]) -> set[int]:
    """Those of the generation roots ``roots`` that the job ``job_token`` deleted (none for a
    single-record delete).  The token is a column of its own: the comment text, shared by
    every single-record delete, could name another delete's generation as this one's."""
    return _done_by_job(conn, job_token, roots, "delete")


def _done_by_job(conn: Connection, job_token: str | None, ids: set[int], action: str
                 ) -> set[int]:
    """Those of the records ``ids`` on which the job ``job_token`` wrote an ``action``
    workflow entry (none for a single-record edit, which has no token)."""
    if not ids or job_token is None:
        return set()
    args = {"ids": sorted(ids), "action": action, "job_token": job_token}
    if is_pg(conn):
        # One record_id lookup per id, whatever the planner estimates: with a few hundred
        # ids PostgreSQL would rather scan the whole workflow_entry table (in parallel).
        return set(conn.execute(text(
            "SELECT j.value FROM unnest(CAST(:ids AS integer[])) AS j(value) "
            "CROSS JOIN LATERAL (SELECT 1 FROM workflow_entry w WHERE w.record_id = j.value "
            "AND w.action = :action AND w.job_token = :job_token LIMIT 1) AS w"), args).scalars())
    return set(conn.execute(ids_param(conn,
        "SELECT record_id FROM workflow_entry WHERE record_id IN :ids AND action = :action "
        "AND job_token = :job_token"), args).scalars())


def undelete_batch(conn: Connection, ctx: Context, ids: Sequence[int]) -> list[Failure]:
    """Undelete each item's delete generation.

    A selected record that was deleted with an ancestor (its generation is the ancestor's)
    comes back when this job undeletes that ancestor, and then counts as done with a workflow
    entry of its own, whatever the order of items and batches: in the same batch it rides
    with the ancestor's item (``rides``); in a later one it reads as live, with an ancestor
    this job undeleted.  It fails ("deleted with an ancestor") only when that ancestor stays
    deleted."""
    record_ids, tombstone_ids = _split(ids)
    failures: dict[int, Failure] = {}
    vanished: list[Failure] = []
    done: list[int] = []
    rides: dict[int, tuple[int, str]] = {}  # item -> (its generation's root, its gid)
    states: dict[int, str] = {}  # the review state each undeleted record returns to
    pending = record_ids
    # Undeleting a record can make a later item's parent live again, so items that failed only
    # because their parent was deleted are tried again until a round makes no progress.
    while pending:
        rows = _deleted_rows(conn, pending)  # locked from now on
        found = {r.id for r in rows}
        others = [i for i in pending if i not in found]
        if others:  # live, or gone
            live = conn.execute(ids_param(conn, "SELECT id, gid, mpath, status FROM record "
                                                "WHERE id IN :ids"), {"ids": others}).all()
            back = _back_with_ancestor(conn, ctx, live)
            for rid, gid, _, status in live:
                if rid in back:  # an earlier batch of this job undeleted it with an ancestor
                    states[rid] = status
                    done.append(rid)
                else:
                    failures[rid] = Failure(gid, "not deleted")
            vanished += _vanished_failures(conn, others, live)
        deleted_ancestors = _deleted_ancestors(conn, rows)
        ok: list[int] = []
        retry: list[int] = []
        for rid, gid, parent_id, _, deleted_root, status in rows:
            states[rid] = status
            if deleted_root != rid:
                rides[rid] = (deleted_root, gid)  # decided once its generation's fate is known
            elif parent_id in deleted_ancestors:
                failures[rid] = Failure(gid, "the parent is deleted")
                retry.append(rid)
            else:
                ok.append(rid)
        if not ok:
            break
        # One statement for the whole batch: the generation index (deleted_root) finds each
        # item's deletion rows, and removing them is the undelete.
        args = {"ids": _ids_param(conn, ok)}
        delete_rows = f"DELETE FROM record_deletion WHERE {_in_generations(conn)}"
        # The restored records' gids, read with the statement (see _write_noting).
        _write_noting(conn, ctx, "UPDATE", delete_rows, args, sqlite_gids=(
            f"SELECT {dialect.joined(conn, 'r.gid')} FROM json_each(:ids) AS j "
            "CROSS JOIN record_deletion t CROSS JOIN record r "
            "WHERE t.deleted_root = j.value AND r.id = t.record_id"))
        done += ok
        for rid in retry:
            failures.pop(rid, None)
        pending = retry
    undeleted = set(done)
    for rid, (root, gid) in rides.items():
        if root in undeleted:
            done.append(rid)
        else:
            failures[rid] = Failure(gid, "deleted with an ancestor; undelete that ancestor")
    write_workflow(conn, done, action="undelete", actor=ctx.actor, now=ctx.now,
                   comment=f"bulk job {ctx.token}", states=states,
                   job_token=ctx.token or None)
    return vanished + list(failures.values()) + _tombstone_failures(conn, tombstone_ids)


def _back_with_ancestor(conn: Connection, ctx: Context, live: Sequence[Any]) -> set[int]:
    """Those of the live records ``live`` (rows with ``id`` and ``mpath``) of which this job
    undeleted an ancestor: they were deleted with it and came back with it.  (A record under
    a deleted ancestor is always deleted too, so one that is live now was brought back.)"""
    ancestors = {rid: [int(a) for a in mpath.strip("/").split("/")[:-1]]
                 for rid, _, mpath, _ in live}
    undeleted = _done_by_job(conn, ctx.token or None,
                             {a for up in ancestors.values() for a in up}, "undelete")
    return {rid for rid, up in ancestors.items() if undeleted.intersection(up)}


def _in_generations(conn: Connection) -> str:
    """``record_deletion`` rows of the generations ``:ids``: one range of the generation
    index per id.  (SQLite, left to itself, scans the whole table once the ids cover a
    good share of it; the CROSS JOIN keeps it on the index.)"""
    if is_pg(conn):
        return "deleted_root = ANY(:ids)"
    return ("record_id IN (SELECT t.record_id FROM json_each(:ids) AS j "
            "CROSS JOIN record_deletion t WHERE t.deleted_root = j.value)")


def _deleted_ancestors(conn: Connection, rows: Sequence[Any]) -> set[int]:
    """The deleted ones among the ancestors of the given records (``mpath`` is the fourth
    column).

    On PostgreSQL the ancestors are locked ``FOR SHARE``: a concurrent delete of one of them
    (which locks it ``FOR UPDATE`` first) then either commits before this read, and the
    record is not undeleted under a deleted parent, or waits for this batch to commit, and its
    subtree statement sees the undeleted rows and takes them along."""
    ancestors = sorted({int(a) for row in rows for a in row[3].strip("/").split("/")[:-1]})
    if not ancestors:
        return set()
    lock = " ORDER BY r.id FOR SHARE OF r" if is_pg(conn) else ""
    return {rid for rid, deleted_root in conn.execute(ids_param(conn,
        "SELECT r.id, (SELECT d.deleted_root FROM record_deletion d WHERE d.record_id = r.id) "
        "FROM record r WHERE r.id IN :ids" + lock), {"ids": ancestors})
        if deleted_root is not None}


def parents_first(conn: Connection, token: str) -> None:
    """Renumber an undelete job's items so that ancestors come before their descendants.

    Undeleting a record fails while its parent is deleted, so a selected child must not be
    tried before a selected ancestor whose undelete brings its parent back.  Within one batch
    :func:`undelete_batch` retries such items; across batches only the order helps, and
    without it the outcome would depend on where the batch boundaries fall.  (Order carries
    no meaning for undelete: it returns no list.)
    """
    _by_treelevel(conn, token, descending=False)


def deepest_first(conn: Connection, token: str) -> None:
    """Renumber a permanent delete's items so that descendants come before their ancestors.

    A selected record inside another selected record's subtree (each the root of a delete
    generation of its own) is then removed by its own item before the ancestor's removal
    takes it along, so its outcome does not depend on where the batch boundaries fall."""
    _by_treelevel(conn, token, descending=True)


def _by_treelevel(conn: Connection, token: str, *, descending: bool) -> None:
    """Renumber the job's items by tree level, and within a level by record id.  Items
    already in level order — the usual case: siblings, or the heads of many subtrees — are
    left as they are, after one read.  (Within a level the order carries no meaning: no
    item there is an ancestor of another.  By id, the rows that follow — the copy into
    ``job_item``, the batches' reads, the clean-up — reach its indexes in order rather than
    at random.)"""
    out_of_order = "step > 0" if descending else "step < 0"
    if not conn.execute(text(
        "SELECT 1 FROM (SELECT r.treelevel - LAG(r.treelevel) OVER (ORDER BY j.id) AS step "
        "FROM job_item j JOIN record r ON r.id = j.item_id WHERE j.job_token = :tok) AS s "
        f"WHERE {out_of_order} LIMIT 1"
    ), {"tok": token}).first():
        return
    reorder_items(conn, token, f"r.treelevel{' DESC' if descending else ''}, r.id")


def add_tombstoned(conn: Connection, token: str, project_gid: str, selection: Selection
                   ) -> None:
    """Add the job's plain gids (and the failed gids of a retried job) that were permanently
    deleted as items ``-tombstone.id``.

    Resolution skips unknown gids silently; a gid that *was* a record of this project is not
    unknown, and undelete or permanent delete must fail it per item ("permanently deleted").
    Runs after any renumbering (which keeps only items that are records).  One lookup of
    the tombstones' gid index per plain gid; selections without plain gids cost nothing."""
    for entry in selection.entries:
        if not isinstance(entry, Gids | Failed):
            continue
        rows, join, args = gid_rows(conn, entry)
        conn.execute(text(
            "INSERT INTO job_item (job_token, item_id) "
            f"SELECT :tok, -t.id FROM {rows} "
            f"{join} record_tombstone t ON t.gid = j.value WHERE t.project_gid = :proj "
            "ORDER BY j.key ON CONFLICT (job_token, item_id) DO NOTHING"
        ), {"tok": token, "proj": project_gid, **args})


def delete_prepare(conn: Connection, token: str, project_gid: str, selection: Selection
                   ) -> None:
    """Prepare step of ``bulk_delete_records``: parents first.  A selected record is then
    never deleted before a selected ancestor, whose deletion takes it along (it counts as
    done, see :func:`delete_batch`): every selected subtree is one generation, whatever the
    order of the selection and wherever the batches fall."""
    if not _one_gid(selection):  # one record has no order to fix
        parents_first(conn, token)


def _one_gid(selection: Selection) -> bool:
    """The selection is one plain gid: at most one item, whose order is all there is."""
    entries = selection.entries
    return len(entries) == 1 and isinstance(entries[0], Gids) and len(entries[0].gids) == 1


def undelete_prepare(conn: Connection, token: str, project_gid: str, selection: Selection
                     ) -> None:
    """Prepare step of ``bulk_undelete_records``: parents first, then tombstoned gids."""
    if not _one_gid(selection):
        parents_first(conn, token)
    add_tombstoned(conn, token, project_gid, selection)


def permanent_delete_prepare(conn: Connection, token: str, project_gid: str,
                             selection: Selection) -> None:
    """Prepare step of the permanent deletes: descendants first, then tombstoned gids."""
    deepest_first(conn, token)
    add_tombstoned(conn, token, project_gid, selection)


def permanent_delete_batch(conn: Connection, ctx: Context, ids: Sequence[int]) -> list[Failure]:
    """Remove the given deleted records (roots of their delete generation) for good."""
    record_ids, tombstone_ids = _split(ids)
    failures = _tombstone_failures(conn, tombstone_ids)
    rows: Sequence[Any] = []
    if record_ids:
        # Locks first, then the state: an undelete holding a deletion row may remove it.
        if is_pg(conn):
            conn.execute(ids_param(conn, "SELECT r.id FROM record r WHERE r.id IN :ids"
                                   + _for_update(conn)), {"ids": record_ids})
        _lock_deletions(conn, record_ids)
        rows = conn.execute(ids_param(conn, _ROWS), {"ids": record_ids}).all()
    failures += _vanished_failures(conn, record_ids, rows)
    heads: dict[int, str] = {}
    for rid, gid, _, mpath, deleted_root in rows:
        if deleted_root is None:
            failures.append(Failure(gid, "not deleted"))
        elif deleted_root != rid:
            failures.append(Failure(gid, "deleted with an ancestor; permanently delete that "
                                         "ancestor"))
        else:
            heads[rid] = mpath
    if heads:
        _remove_subtrees(conn, ctx, heads)
    return failures


def _remove_subtrees(conn: Connection, ctx: Context, heads: dict[int, str]) -> None:
    """Remove the subtrees under ``heads`` (id → mpath) and every link to a removed record,
    with their versions, workflow entries and search entries; leave tombstones; decrement
    the surviving parents' ``childcount``.

    The removed set is read once (one ``mpath`` range per head, one ``canonical_id`` lookup
    per row in it) and every statement after that reaches its rows by id: a primary key or
    a ``record_id`` index lookup per removed record, whatever the project's size."""
    roots = json.dumps([{"lo": m, "hi": subtree_upper(m)} for m in heads.values()])
    source = _ranges(conn)
    tree = conn.execute(text(
        f"SELECT r.id, r.parent_id FROM {source} CROSS JOIN record r "
        "WHERE r.mpath >= b.lo AND r.mpath < b.hi"
    ), {"roots": roots}).all()
    links = conn.execute(text(
        f"SELECT l.id, l.parent_id FROM {_ids_rows(conn)} CROSS JOIN record l "
        "WHERE l.canonical_id = g.value AND l.is_link = true"
    ), {"gone": _ids_param(conn, [rid for rid, _ in tree])}).all()
    parent_of: dict[int, int | None] = {rid: pid for rid, pid in tree}
    parent_of.update((rid, pid) for rid, pid in links)
    gone = sorted(parent_of)
    # Parents that stay lose the children that go (links included); their public shape
    # changed, so they get an UPDATE event.
    lost = Counter(p for p in parent_of.values() if p is not None and p not in parent_of)
    args = {"gone": _ids_param(conn, gone), "now": ctx.now}
    conn.execute(text(
        "INSERT INTO record_tombstone (gid, record_id, project_gid, parent_gid, deleted_on) "
        f"SELECT r.gid, r.id, r.project_gid, p.gid, :now FROM {_ids_rows(conn)} "
        "CROSS JOIN record r LEFT JOIN record p ON p.id = r.parent_id WHERE r.id = g.value "
        "ON CONFLICT (gid) DO NOTHING"
    ), args)
    if lost:
        conn.execute(text(
            "UPDATE record SET childcount = childcount - :n, updated_on = :now WHERE id = :id"
        ), [{"n": n, "now": ctx.now, "id": pid} for pid, n in sorted(lost.items())])
    for table in ("record_version", "workflow_entry", "record_deletion"):
        conn.execute(text(f"DELETE FROM {table} WHERE {_in_ids(conn, 'record_id')}"), args)
    removed = conn.execute(text(
        f"DELETE FROM record WHERE {_in_ids(conn, 'id')} RETURNING gid"), args).scalars().all()
    unindex(conn, gone)  # removed records lose their search entries
    ctx.effects.changed("DELETE", removed)
    if lost:
        ctx.effects.changed("UPDATE", conn.execute(ids_param(conn,
            "SELECT gid FROM record WHERE id IN :ids ORDER BY id"), {"ids": sorted(lost)}
        ).scalars())


def _ids_param(conn: Connection, ids: Sequence[int]) -> Any:
    """Record ids as one parameter (``:gone``, ``:ids``): an array on PostgreSQL, JSON text
    on SQLite (whose variable limit an expanded list of 100,000 ids would exceed)."""
    return list(ids) if is_pg(conn) else dialect.json_ids(ids)


def _ids_rows(conn: Connection) -> str:
    """The ``:gone`` parameter as rows ``g.value``."""
    if is_pg(conn):
        return "unnest(CAST(:gone AS integer[])) AS g(value)"
    return "json_each(:gone) AS g"


def _in_ids(conn: Connection, column: str) -> str:
    """``column`` is one of the ids in ``:gone``: an index lookup per id."""
    if is_pg(conn):
        return f"{column} = ANY(:gone)"
    return f"{column} IN (SELECT g.value FROM json_each(:gone) AS g)"


def permanent_delete_one(conn: Connection, ctx: Context, ids: Sequence[int]) -> list[Failure]:
    """``permanent_delete_record``: :func:`permanent_delete_batch` for one record, whose
    result carries the record's parent (SPEC §5); a record that cannot be removed rejects
    the job (422, with the reason) instead of counting as a failed item of a done job."""
    parent = None
    record_ids, _ = _split(ids)
    if record_ids:
        parent = conn.execute(ids_param(conn,
            "SELECT p.gid FROM record r LEFT JOIN record p ON p.id = r.parent_id "
            "WHERE r.id IN :ids"), {"ids": record_ids[:1]}).scalar()
    failures = permanent_delete_batch(conn, ctx, ids[:1])
    if failures:
        ctx.effects.result = error_result(422, "unprocessable", failures[0].reason,
                                          record=failures[0].gid)
    else:
        gid = conn.execute(ids_param(conn,
            "SELECT gid FROM record_tombstone WHERE record_id IN :ids ORDER BY id DESC"
        ), {"ids": record_ids[:1]}).scalar()
        ctx.effects.result = Result(200, {"record": gid, "parent": parent})
    return failures

