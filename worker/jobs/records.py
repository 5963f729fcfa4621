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
import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, text

from models import dialect
from models.dialect import ids_param, is_pg
from models.history import write_workflow
from models.records import live_sql, subtree_upper
from models.search.index import reindex
from models.selection import Gids, parse_selection
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
_ROWS = ("SELECT r.id, r.gid, r.parent_id, r.mpath, d.deleted_root FROM record r "
         "LEFT JOIN record_deletion d ON d.record_id = r.id WHERE r.id IN :ids")
#: The deleted ones of a batch's records, with their delete generation and own status.
_DELETED_ROWS = ("SELECT d.record_id AS id, r.gid, r.parent_id, r.mpath, d.deleted_root, "
                 "r.status FROM record_deletion d JOIN record r ON r.id = d.record_id "
                 "WHERE d.record_id IN :ids")


def _note(conn: Connection, ctx: Context, action: str, changed: Any) -> None:
    """Note the records of a ``RETURNING record_id`` result for record events."""
    if not ctx.effects.collect_events:
        return
    ids = changed.scalars().all()
    if ids:
        ctx.effects.changed(action, conn.execute(text(
            f"SELECT r.gid FROM {dialect.id_rows(conn, 'ids')} JOIN record r ON r.id = j.value"
        ), {"ids": dialect.json_ids(ids)}).scalars())


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
    a batch that is decided below (``tops``); across batches, a record this job already
    deleted with an ancestor counts as done, and an ancestor deleted after its descendant
    takes the descendant's generation into its own.  This job's deletions are known by the
    workflow entries it wrote (their comment names the job)."""
    comment = f"bulk job {ctx.token}"
    rows = conn.execute(ids_param(conn, _ROWS + _for_update(conn)), {"ids": list(ids)}).all()
    failures = _vanished_failures(conn, ids, rows)
    ok: dict[int, str] = {}
    gone_with = _deleted_by_job(conn, comment, {r.deleted_root for r in rows if r.deleted_root})
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
                   comment=comment, state_sql="'deleted'")
    tops = _claim(conn, ctx, tops, ok, rows, failures)
    if not tops:
        return failures
    roots = json.dumps([{"id": rid, "lo": ok[rid], "hi": subtree_upper(ok[rid])} for rid in tops])
    if is_pg(conn):
        source = "jsonb_to_recordset(CAST(:roots AS jsonb)) AS b(id integer, lo text, hi text)"
    else:
        source = ("(SELECT json_extract(value, '$.id') AS id, json_extract(value, '$.lo') AS lo, "
                  "json_extract(value, '$.hi') AS hi FROM json_each(:roots)) AS b")
    # Generations this job started inside a top's subtree (a selected descendant deleted in
    # an earlier batch) become the top's, links included.
    conn.execute(text(
        "UPDATE record_deletion SET deleted_root = f.top FROM ("
        f"SELECT b.id AS top, r.id AS gen FROM {source} "
        "JOIN record r ON r.mpath >= b.lo AND r.mpath < b.hi "
        "JOIN record_deletion g ON g.record_id = r.id AND g.deleted_root = r.id "
        "JOIN workflow_entry w ON w.record_id = r.id "
        "WHERE r.project_gid = :proj AND w.action = 'delete' AND w.comment = :comment) AS f "
        "WHERE record_deletion.deleted_root = f.gen"
    ), {"roots": roots, "proj": ctx.project_gid, "comment": comment})
    returning = ctx.effects.returning("record_id")
    _note(conn, ctx, "DELETE", conn.execute(text(
        "INSERT INTO record_deletion (record_id, deleted_root) "
        f"SELECT r.id, b.id FROM {source} JOIN record r ON r.mpath >= b.lo AND r.mpath < b.hi "
        f"WHERE r.project_gid = :proj AND {live_sql('r')} "
        "ON CONFLICT (record_id) DO NOTHING" + returning
    ), {"roots": roots, "proj": ctx.project_gid}))
    # Links pointing at anything just deleted are deleted in the same generation.
    _note(conn, ctx, "DELETE", conn.execute(ids_param(conn,
        "INSERT INTO record_deletion (record_id, deleted_root) "
        "SELECT l.id, t.deleted_root FROM record_deletion t "
        "JOIN record l ON l.canonical_id = t.record_id "
        f"WHERE t.deleted_root IN :ids AND l.is_link = true AND {live_sql('l')} "
        "ON CONFLICT (record_id) DO NOTHING" + returning
    ), {"ids": tops}))
    write_workflow(conn, list(ok), action="delete", actor=ctx.actor, now=ctx.now,
                   comment=comment, state_sql="'deleted'")
    return failures


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


def _deleted_by_job(conn: Connection, comment: str, roots: set[int]) -> set[int]:
    """Those of the generation roots ``roots`` that the job with this workflow comment
    deleted."""
    if not roots:
        return set()
    return set(conn.execute(ids_param(conn,
        "SELECT record_id FROM workflow_entry WHERE record_id IN :ids AND action = 'delete' "
        "AND comment = :comment"), {"ids": sorted(roots), "comment": comment}).scalars())


def undelete_batch(conn: Connection, ctx: Context, ids: Sequence[int]) -> list[Failure]:
    record_ids, tombstone_ids = _split(ids)
    failures: dict[int, Failure] = {}
    vanished: list[Failure] = []
    done: list[int] = []
    states: dict[int, str] = {}  # the review state each undeleted record returns to
    pending = record_ids
    # Undeleting a record can make a later item's parent live again, so items that failed only
    # because their parent was deleted are tried again until a round makes no progress.
    while pending:
        rows = _deleted_rows(conn, pending)  # locked from now on
        found = {r.id for r in rows}
        others = [i for i in pending if i not in found]
        if others:  # live, or gone
            live = conn.execute(ids_param(conn, "SELECT id, gid FROM record WHERE id IN :ids"),
                                {"ids": others}).all()
            failures.update((rid, Failure(gid, "not deleted")) for rid, gid in live)
            vanished += _vanished_failures(conn, others, live)
        deleted_ancestors = _deleted_ancestors(conn, rows)
        ok: list[int] = []
        retry: list[int] = []
        for rid, gid, parent_id, _, deleted_root, status in rows:
            states[rid] = status
            if deleted_root != rid:
                failures[rid] = Failure(gid, "deleted with an ancestor; undelete that ancestor")
            elif parent_id in deleted_ancestors:
                failures[rid] = Failure(gid, "the parent is deleted")
                retry.append(rid)
            else:
                ok.append(rid)
        if not ok:
            break
        # One statement for the whole batch: the generation index (deleted_root) finds each
        # item's deletion rows, and removing them is the undelete.
        _note(conn, ctx, "UPDATE", conn.execute(ids_param(conn,
            "DELETE FROM record_deletion WHERE deleted_root IN :ids"
            + ctx.effects.returning("record_id")
        ), {"ids": ok}))
        done += ok
        for rid in retry:
            failures.pop(rid, None)
        pending = retry
    write_workflow(conn, done, action="undelete", actor=ctx.actor, now=ctx.now,
                   comment=f"bulk job {ctx.token}", states=states)
    return vanished + list(failures.values()) + _tombstone_failures(conn, tombstone_ids)


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
        "SELECT r.id, d.deleted_root FROM record r LEFT JOIN record_deletion d "
        "ON d.record_id = r.id WHERE r.id IN :ids" + lock), {"ids": ancestors})
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
    """Renumber the job's items by tree level (then by their order so far).  Items already
    in that order — the usual case: siblings, or the heads of many subtrees — are left as
    they are, after one read."""
    out_of_order = "step > 0" if descending else "step < 0"
    if not conn.execute(text(
        "SELECT 1 FROM (SELECT r.treelevel - LAG(r.treelevel) OVER (ORDER BY j.id) AS step "
        "FROM job_item j JOIN record r ON r.id = j.item_id WHERE j.job_token = :tok) AS s "
        f"WHERE {out_of_order} LIMIT 1"
    ), {"tok": token}).first():
        return
    tmp = str(uuid.uuid4())
    conn.execute(text(
        "INSERT INTO job_item (job_token, item_id) "
        "SELECT :tmp, j.item_id FROM job_item j JOIN record r ON r.id = j.item_id "
        f"WHERE j.job_token = :tok ORDER BY r.treelevel{' DESC' if descending else ''}, j.id"
    ), {"tmp": tmp, "tok": token})
    conn.execute(text("DELETE FROM job_item WHERE job_token = :tok"), {"tok": token})
    conn.execute(text("UPDATE job_item SET job_token = :tok WHERE job_token = :tmp"),
                 {"tok": token, "tmp": tmp})


def add_tombstoned(conn: Connection, token: str) -> None:
    """Add the job's plain gids that were permanently deleted as items ``-tombstone.id``.

    Resolution skips unknown gids silently; a gid that *was* a record of this project is not
    unknown, and undelete or permanent delete must fail it per item ("permanently deleted").
    Runs after any renumbering (which keeps only items that are records)."""
    job = conn.execute(text("SELECT project_gid, params FROM job WHERE token = :t"),
                       {"t": token}).one()
    if conn.execute(text("SELECT 1 FROM record_tombstone WHERE project_gid = :proj LIMIT 1"),
                    {"proj": job.project_gid}).first() is None:
        return  # nothing of this project was ever permanently deleted
    # JSON comes back as text from SQLite and decoded from PostgreSQL
    params = job.params if isinstance(job.params, dict) else json.loads(job.params or "{}")
    selection = parse_selection(params.get("selection"), kind="records")
    for entry in selection.entries:
        if not isinstance(entry, Gids):
            continue
        conn.execute(text(
            "INSERT INTO job_item (job_token, item_id) "
            f"SELECT :tok, -t.id FROM {dialect.json_rows(conn, 'gids')} "
            "JOIN record_tombstone t ON t.gid = j.value WHERE t.project_gid = :proj "
            "ORDER BY j.key ON CONFLICT (job_token, item_id) DO NOTHING"
        ), {"tok": token, "proj": job.project_gid, "gids": json.dumps(entry.gids)})


def undelete_prepare(conn: Connection, token: str) -> None:
    """Prepare step of ``bulk_undelete_records``: parents first, then tombstoned gids."""
    parents_first(conn, token)
    add_tombstoned(conn, token)


def permanent_delete_prepare(conn: Connection, token: str) -> None:
    """Prepare step of the permanent deletes: descendants first, then tombstoned gids."""
    deepest_first(conn, token)
    add_tombstoned(conn, token)


def permanent_delete_batch(conn: Connection, ctx: Context, ids: Sequence[int]) -> list[Failure]:
    """Remove the given deleted records (roots of their delete generation) for good."""
    record_ids, tombstone_ids = _split(ids)
    failures = _tombstone_failures(conn, tombstone_ids)
    rows = []
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
    the surviving parents' ``childcount``.  Set-based: every statement works on the same
    ``gone`` set, computed from the subtree ranges (``mpath`` index) and ``canonical_id``."""
    roots = json.dumps([{"lo": m, "hi": subtree_upper(m)} for m in heads.values()])
    if is_pg(conn):
        source = "jsonb_to_recordset(CAST(:roots AS jsonb)) AS b(lo text, hi text)"
    else:
        source = ("(SELECT json_extract(value, '$.lo') AS lo, json_extract(value, '$.hi') AS hi "
                  "FROM json_each(:roots)) AS b")
    gone = (
        f"WITH tree AS (SELECT r.id FROM {source} JOIN record r "
        "ON r.mpath >= b.lo AND r.mpath < b.hi WHERE r.project_gid = :proj), "
        "gone AS (SELECT id FROM tree UNION SELECT l.id FROM record l "
        "WHERE l.is_link = true AND l.canonical_id IN (SELECT id FROM tree)) "
    )
    args = {"roots": roots, "proj": ctx.project_gid, "now": ctx.now}
    conn.execute(text(
        gone + "INSERT INTO record_tombstone (gid, record_id, project_gid, parent_gid, "
        "deleted_on) SELECT r.gid, r.id, r.project_gid, p.gid, :now FROM record r "
        "LEFT JOIN record p ON p.id = r.parent_id WHERE r.id IN (SELECT id FROM gone) "
        "ON CONFLICT (gid) DO NOTHING"
    ), args)
    # Parents that stay lose the children that go (links included); their public shape
    # changed, so they get an UPDATE event.
    parents = conn.execute(text(
        gone + "UPDATE record SET childcount = childcount - (SELECT COUNT(*) FROM record c "
        "WHERE c.parent_id = record.id AND c.id IN (SELECT id FROM gone)), updated_on = :now "
        "WHERE record.id IN (SELECT parent_id FROM record WHERE id IN (SELECT id FROM gone)) "
        "AND record.id NOT IN (SELECT id FROM gone) RETURNING record.gid"
    ), args).scalars().all()
    for table in ("record_version", "workflow_entry", "record_deletion"):
        conn.execute(text(
            gone + f"DELETE FROM {table} WHERE record_id IN (SELECT id FROM gone)"), args)
    removed = conn.execute(text(
        gone + "DELETE FROM record WHERE id IN (SELECT id FROM gone) RETURNING id, gid"
    ), args).all()
    reindex(conn, [r.id for r in removed])  # removed records lose their search entries
    ctx.effects.changed("DELETE", [r.gid for r in removed])
    ctx.effects.changed("UPDATE", parents)


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
