"""Record jobs: bulk delete, bulk undelete and permanent delete, with subtree semantics.

Deletion marks a record and its live subtree ``deleted`` and stamps them with the
record's id in ``deleted_root`` (the delete generation); links pointing into the subtree go
with it under the same stamp.  Undeletion restores exactly the rows carrying the stamp, so
records that had been deleted on their own before stay deleted.  Both are written as a
handful of set-based statements per batch, whatever the subtree sizes.

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

Concurrency (PostgreSQL; SQLite serialises writers): every batch first locks the records it
was given (``FOR UPDATE``, in id order), and undelete also locks the ancestors it checks
(``FOR SHARE``), so the set statements that follow take their snapshot after a concurrent
job's conflicting batch has committed, and each record ends in one well-defined state.

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
from models.dialect import is_pg
from models.history import write_workflow
from models.records import subtree_upper
from models.search.index import reindex
from models.selection import Gids, parse_selection
from worker.jobs.base import Context, Failure, Result, error_result, ids_param

PERMANENTLY_DELETED = "permanently deleted"


def _for_update(conn: Connection) -> str:
    """Row locks for the records a batch was given (PostgreSQL; SQLite writers are already
    serialised by ``BEGIN IMMEDIATE``)."""
    return " ORDER BY id FOR UPDATE" if is_pg(conn) else ""


def _split(ids: Sequence[int]) -> tuple[list[int], list[int]]:
    """Record ids, and tombstone ids (job items ``< 0``, see :func:`add_tombstoned`)."""
    return [i for i in ids if i > 0], [-i for i in ids if i < 0]


def _tombstone_failures(conn: Connection, tombstone_ids: list[int]) -> list[Failure]:
    if not tombstone_ids:
        return []
    gids = conn.execute(ids_param("SELECT gid FROM record_tombstone WHERE id IN :ids ORDER BY id"),
                        {"ids": tombstone_ids}).scalars()
    return [Failure(g, PERMANENTLY_DELETED) for g in gids]


def _vanished_failures(conn: Connection, record_ids: Sequence[int], rows: Sequence[Any]
                       ) -> list[Failure]:
    """Items whose record vanished since resolution: a concurrent job (or an ancestor's
    removal) permanently deleted it.  They fail as "permanently deleted" — the record is in
    that state, but not by this item."""
    vanished = sorted(set(record_ids) - {r.id for r in rows})
    if not vanished:
        return []
    return [Failure(g, PERMANENTLY_DELETED) for g in conn.execute(ids_param(
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
    rows = conn.execute(ids_param(
        "SELECT id, gid, status, parent_id, mpath, deleted_root FROM record WHERE id IN :ids"
        + _for_update(conn)
    ), {"ids": list(ids)}).all()
    failures = _vanished_failures(conn, ids, rows)
    ok: dict[int, str] = {}
    gone_with = _deleted_by_job(conn, comment, {r.deleted_root for r in rows
                                                if r.status == "deleted" and r.deleted_root})
    went_down: list[int] = []
    for rid, gid, status, parent_id, mpath, deleted_root in rows:
        if status == "deleted" and deleted_root in gone_with and deleted_root != rid:
            went_down.append(rid)  # deleted with an ancestor selected in this job
        elif status == "deleted":
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
        "UPDATE record SET deleted_root = f.top FROM ("
        f"SELECT b.id AS top, r.id AS gen FROM {source} "
        "JOIN record r ON r.mpath >= b.lo AND r.mpath < b.hi "
        "JOIN workflow_entry w ON w.record_id = r.id "
        "WHERE r.project_gid = :proj AND r.status = 'deleted' AND r.deleted_root = r.id "
        "AND w.action = 'delete' AND w.comment = :comment) AS f "
        "WHERE record.deleted_root = f.gen"
    ), {"roots": roots, "proj": ctx.project_gid, "comment": comment})
    effects = ctx.effects
    changed = conn.execute(text(
        "UPDATE record SET prev_status = record.status, status = 'deleted', "
        f"deleted_root = b.id, updated_on = :now FROM {source} "
        "WHERE record.mpath >= b.lo AND record.mpath < b.hi AND record.status <> 'deleted' "
        "AND record.project_gid = :proj" + effects.returning()
    ), {"roots": roots, "now": ctx.now, "proj": ctx.project_gid})
    if effects.collect_events:
        effects.changed("DELETE", changed.scalars())
    # Links pointing at anything just deleted are deleted in the same generation.
    changed = conn.execute(ids_param(
        "UPDATE record SET prev_status = record.status, status = 'deleted', "
        "deleted_root = t.deleted_root, updated_on = :now FROM record AS t "
        "WHERE record.canonical_id = t.id AND record.is_link = true "
        "AND record.status <> 'deleted' AND t.status = 'deleted' AND t.deleted_root IN :ids"
        + effects.returning()
    ), {"ids": tops, "now": ctx.now})
    if effects.collect_events:
        effects.changed("DELETE", changed.scalars())
    write_workflow(conn, list(ok), action="delete", actor=ctx.actor, now=ctx.now,
                   comment=comment, state_sql="'deleted'")
    return failures


def _deleted_by_job(conn: Connection, comment: str, roots: set[int]) -> set[int]:
    """Those of the generation roots ``roots`` that the job with this workflow comment
    deleted."""
    if not roots:
        return set()
    return set(conn.execute(ids_param(
        "SELECT record_id FROM workflow_entry WHERE record_id IN :ids AND action = 'delete' "
        "AND comment = :comment"), {"ids": sorted(roots), "comment": comment}).scalars())


def undelete_batch(conn: Connection, ctx: Context, ids: Sequence[int]) -> list[Failure]:
    record_ids, tombstone_ids = _split(ids)
    failures: dict[int, Failure] = {}
    vanished: list[Failure] = []
    done: list[int] = []
    pending = record_ids
    # Undeleting a record can make a later item's parent live again, so items that failed only
    # because their parent was deleted are tried again until a round makes no progress.
    while pending:
        rows = conn.execute(ids_param(
            "SELECT id, gid, status, deleted_root, parent_id, mpath FROM record "
            "WHERE id IN :ids" + _for_update(conn)
        ), {"ids": pending}).all()
        if pending is record_ids:  # the first round; the rows are locked from now on
            vanished = _vanished_failures(conn, record_ids, rows)
        parent_status = _ancestor_status(conn, rows)
        ok: list[int] = []
        retry: list[int] = []
        for rid, gid, status, deleted_root, parent_id, _ in rows:
            if status != "deleted":
                failures[rid] = Failure(gid, "not deleted")
            elif deleted_root != rid:
                failures[rid] = Failure(gid, "deleted with an ancestor; undelete that ancestor")
            elif parent_status.get(parent_id) == "deleted":
                failures[rid] = Failure(gid, "the parent is deleted")
                retry.append(rid)
            else:
                ok.append(rid)
        if not ok:
            break
        # One statement for the whole batch: the generation index (deleted_root) finds each
        # item's rows; the status guard makes a repeated batch a no-op.
        changed = conn.execute(ids_param(
            "UPDATE record SET status = COALESCE(prev_status, 'draft'), prev_status = NULL, "
            "deleted_root = NULL, updated_on = :now WHERE deleted_root IN :ids "
            "AND status = 'deleted'" + ctx.effects.returning()
        ), {"ids": ok, "now": ctx.now})
        if ctx.effects.collect_events:
            ctx.effects.changed("UPDATE", changed.scalars())
        done += ok
        for rid in retry:
            failures.pop(rid, None)
        pending = retry
    write_workflow(conn, done, action="undelete", actor=ctx.actor, now=ctx.now,
                   comment=f"bulk job {ctx.token}")
    return vanished + list(failures.values()) + _tombstone_failures(conn, tombstone_ids)


def _ancestor_status(conn: Connection, rows: Sequence[Any]) -> dict[int, str]:
    """Status of every ancestor of the given records (``mpath`` is the last column).

    On PostgreSQL the ancestors are locked ``FOR SHARE``: a concurrent delete of one of them
    (which locks it ``FOR UPDATE`` first) then either commits before this read, and the
    record is not undeleted under a deleted parent, or waits for this batch to commit, and its
    subtree update sees the undeleted rows and takes them along."""
    ancestors = sorted({int(a) for row in rows for a in row[-1].strip("/").split("/")[:-1]})
    if not ancestors:
        return {}
    lock = " ORDER BY id FOR SHARE" if is_pg(conn) else ""
    return dict(conn.execute(ids_param(  # type: ignore[arg-type]
        "SELECT id, status FROM record WHERE id IN :ids" + lock), {"ids": ancestors}).all())


def parents_first(conn: Connection, token: str) -> None:
    """Renumber an undelete job's items so that ancestors come before their descendants.

    Undeleting a record fails while its parent is deleted, so a selected child must not be
    tried before a selected ancestor whose undelete brings its parent back.  Within one batch
    :func:`undelete_batch` retries such items; across batches only the order helps, and
    without it the outcome would depend on where the batch boundaries fall.  (Order carries
    no meaning for undelete: it returns no list.)
    """
    tmp = str(uuid.uuid4())
    conn.execute(text(
        "INSERT INTO job_item (job_token, item_id) "
        "SELECT :tmp, j.item_id FROM job_item j JOIN record r ON r.id = j.item_id "
        "WHERE j.job_token = :tok ORDER BY r.treelevel, j.id"
    ), {"tmp": tmp, "tok": token})
    conn.execute(text("DELETE FROM job_item WHERE job_token = :tok"), {"tok": token})
    conn.execute(text("UPDATE job_item SET job_token = :tok WHERE job_token = :tmp"),
                 {"tok": token, "tmp": tmp})


def deepest_first(conn: Connection, token: str) -> None:
    """Renumber a permanent delete's items so that descendants come before their ancestors.

    A selected record inside another selected record's subtree (each the root of a delete
    generation of its own) is then removed by its own item before the ancestor's removal
    takes it along, so its outcome does not depend on where the batch boundaries fall."""
    tmp = str(uuid.uuid4())
    conn.execute(text(
        "INSERT INTO job_item (job_token, item_id) "
        "SELECT :tmp, j.item_id FROM job_item j JOIN record r ON r.id = j.item_id "
        "WHERE j.job_token = :tok ORDER BY r.treelevel DESC, j.id"
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
    rows = conn.execute(ids_param(
        "SELECT id, gid, status, deleted_root, mpath FROM record WHERE id IN :ids"
        + _for_update(conn)
    ), {"ids": record_ids}).all() if record_ids else []
    failures += _vanished_failures(conn, record_ids, rows)
    heads: dict[int, str] = {}
    for rid, gid, status, deleted_root, mpath in rows:
        if status != "deleted":
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
    for table in ("record_version", "workflow_entry"):
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
        parent = conn.execute(ids_param(
            "SELECT p.gid FROM record r LEFT JOIN record p ON p.id = r.parent_id "
            "WHERE r.id IN :ids"), {"ids": record_ids[:1]}).scalar()
    failures = permanent_delete_batch(conn, ctx, ids[:1])
    if failures:
        ctx.effects.result = error_result(422, "unprocessable", failures[0].reason,
                                          record=failures[0].gid)
    else:
        gid = conn.execute(ids_param(
            "SELECT gid FROM record_tombstone WHERE record_id IN :ids ORDER BY id DESC"
        ), {"ids": record_ids[:1]}).scalar()
        ctx.effects.result = Result(200, {"record": gid, "parent": parent})
    return failures
