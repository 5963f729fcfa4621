"""Record jobs: bulk delete and bulk undelete, with subtree semantics.

Deletion marks a record and its live subtree ``deleted`` and stamps them with the
record's id in ``deleted_root`` (the delete generation); links pointing into the subtree go
with it under the same stamp.  Undeletion restores exactly the rows carrying the stamp, so
records that had been deleted on their own before stay deleted.  Both are written as a
handful of set-based statements per batch, whatever the subtree sizes.

Each successfully processed item gets one workflow entry (on the selected record; it stands
for the whole subtree change).
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from sqlalchemy import Connection, text

from models.dialect import is_pg
from models.history import write_workflow
from models.records import subtree_upper
from worker.jobs.base import Context, Failure, ids_param


def delete_batch(conn: Connection, ctx: Context, ids: Sequence[int]) -> list[Failure]:
    rows = conn.execute(ids_param(
        "SELECT id, gid, status, parent_id, mpath FROM record WHERE id IN :ids"
    ), {"ids": list(ids)}).all()
    failures: list[Failure] = []
    ok: dict[int, str] = {}
    for rid, gid, status, parent_id, mpath in rows:
        if status == "deleted":
            failures.append(Failure(gid, "already deleted"))
        elif parent_id is None:
            failures.append(Failure(gid, "the root record cannot be deleted"))
        else:
            ok[rid] = mpath
    # A selected record inside another selected record's subtree is deleted with it; only the
    # outermost ones start a delete generation.
    tops = [rid for rid, mpath in ok.items()
            if not any(int(a) in ok for a in mpath.strip("/").split("/")[:-1])]
    if not tops:
        return failures
    roots = json.dumps([{"id": rid, "lo": ok[rid], "hi": subtree_upper(ok[rid])} for rid in tops])
    if is_pg(conn):
        source = "jsonb_to_recordset(CAST(:roots AS jsonb)) AS b(id integer, lo text, hi text)"
    else:
        source = ("(SELECT json_extract(value, '$.id') AS id, json_extract(value, '$.lo') AS lo, "
                  "json_extract(value, '$.hi') AS hi FROM json_each(:roots)) AS b")
    conn.execute(text(
        "UPDATE record SET prev_status = record.status, status = 'deleted', "
        f"deleted_root = b.id, updated_on = :now FROM {source} "
        "WHERE record.mpath >= b.lo AND record.mpath < b.hi AND record.status <> 'deleted' "
        "AND record.project_gid = :proj"
    ), {"roots": roots, "now": ctx.now, "proj": ctx.project_gid})
    # Links pointing at anything just deleted are deleted in the same generation.
    conn.execute(ids_param(
        "UPDATE record SET prev_status = record.status, status = 'deleted', "
        "deleted_root = t.deleted_root, updated_on = :now FROM record AS t "
        "WHERE record.canonical_id = t.id AND record.is_link = true "
        "AND record.status <> 'deleted' AND t.status = 'deleted' AND t.deleted_root IN :ids"
    ), {"ids": tops, "now": ctx.now})
    write_workflow(conn, list(ok), action="delete", actor=ctx.actor, now=ctx.now,
                   comment=f"bulk job {ctx.token}", state_sql="'deleted'")
    return failures


def undelete_batch(conn: Connection, ctx: Context, ids: Sequence[int]) -> list[Failure]:
    pending = list(ids)
    failures: dict[int, Failure] = {}
    done: list[int] = []
    # Undeleting a record can make a later item's parent live again, so items that failed only
    # because their parent was deleted are tried again until a round makes no progress.
    while pending:
        rows = conn.execute(ids_param(
            "SELECT r.id, r.gid, r.status, r.deleted_root, p.status FROM record r "
            "LEFT JOIN record p ON p.id = r.parent_id WHERE r.id IN :ids"
        ), {"ids": pending}).all()
        ok: list[int] = []
        retry: list[int] = []
        for rid, gid, status, deleted_root, parent_status in rows:
            if status != "deleted":
                failures[rid] = Failure(gid, "not deleted")
            elif deleted_root != rid:
                failures[rid] = Failure(gid, "deleted with an ancestor; undelete that ancestor")
            elif parent_status == "deleted":
                failures[rid] = Failure(gid, "the parent is deleted")
                retry.append(rid)
            else:
                ok.append(rid)
        if not ok:
            break
        conn.execute(ids_param(
            "UPDATE record SET status = COALESCE(prev_status, 'draft'), prev_status = NULL, "
            "deleted_root = NULL, updated_on = :now WHERE deleted_root IN :ids "
            "AND status = 'deleted'"
        ), {"ids": ok, "now": ctx.now})
        done += ok
        for rid in retry:
            failures.pop(rid, None)
        pending = retry
    write_workflow(conn, done, action="undelete", actor=ctx.actor, now=ctx.now,
                   comment=f"bulk job {ctx.token}")
    return list(failures.values())

