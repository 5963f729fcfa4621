"""Version jobs: restore a record version (DatoCMS) and revert to one (Plone).

Both make an earlier version's snapshot (title, fields, definition, channels) the record's
content and write a new current version (:func:`models.history.write_versions`), so history
only ever grows.  The record's status is left alone: restoring content neither publishes
nor unpublishes (the published version, if any, stays the published one).

Parameters (``job.params`` beside the selection, whose single item is the version's record):

* ``restore_record_version``: ``{"version": <version id>}``;
* ``revert_record_version``: ``{"version": <version number>}`` (of the selected record), or
  ``{"version_id": <version id>}``.

Each job returns a result, committed on the job row with its batch: ``200`` and
``{"record": <the record in its public shape>, "version": {"id", "number"}}`` — the public
shape is :func:`models.queries.records_public`'s, which the dialects map to their own — or a
failed result that rejects the job: ``404`` for an unknown version (or one of another record
or project: :func:`models.history_reads.find_version` decides, as for the dialects), ``422``
for a deleted record or malformed parameters.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, select, update
from sqlmodel import Session

from bulkjobs.errors import NotFound
from models.history import write_versions
from models.history_reads import find_version
from models.queries import records_public
from models.records import Record, is_deleted
from models.search.index import reindex
from models.versions import RecordVersion
from worker.jobs.base import Context, Failure, Result, error_result

records_t = Record.__table__
versions_t = RecordVersion.__table__

#: Restored from a snapshot; status and orderings are not part of a version's content here.
CONTENT = ("title", "fields", "definition", "channels")

NOT_FOUND = error_result(404, "not_found", "Record not found")


def restore_batch(conn: Connection, ctx: Context, ids: Sequence[int]) -> list[Failure]:
    """``restore_record_version``: the version given by id becomes the new current one."""
    vid = ctx.params.get("version")
    which = {"version_id": vid} if isinstance(vid, str) else None
    return _restore(conn, ctx, ids, which, invalid="version must be a version id",
                    comment="Restored version {n}")


def revert_batch(conn: Connection, ctx: Context, ids: Sequence[int]) -> list[Failure]:
    """``revert_record_version``: the selected record's version ``n`` (or the version given by
    ``version_id``) becomes the new current one, commented "Reverted to revision n"."""
    number, vid = ctx.params.get("version"), ctx.params.get("version_id")
    which: dict[str, Any] | None = None
    if isinstance(vid, str):
        which = {"version_id": vid}
    elif isinstance(number, int) and not isinstance(number, bool):
        which = {"number": number}
    return _restore(conn, ctx, ids, which, invalid="version must be a version number",
                    comment="Reverted to revision {n}")


def _restore(conn: Connection, ctx: Context, ids: Sequence[int],
             which: dict[str, Any] | None, *, invalid: str, comment: str) -> list[Failure]:
    """Restore the first item's version that ``which`` (:func:`find_version`'s ``number`` or
    ``version_id``) picks; extra items (a selection of more than the version's record) fail,
    they are not this job's."""
    rows = conn.execute(select(records_t.c.id, records_t.c.gid)
                        .where(records_t.c.id.in_(list(ids))).with_for_update()).all()
    by_id = {r.id: r for r in rows}
    extra = [Failure(by_id[i].gid, "one record per restore") for i in ids[1:] if i in by_id]
    rec = by_id.get(ids[0])
    if rec is None:  # removed since resolution
        ctx.effects.result = NOT_FOUND
        return extra
    if which is None:
        return [_fail(ctx, rec.gid, 422, "invalid", invalid)] + extra
    with Session(bind=conn) as session:
        try:
            version, _ = find_version(session, ctx.project_gid, record_id=rec.id, **which)
        except NotFound as missing:
            return [_fail(ctx, rec.gid, 404, "not_found", missing.message)] + extra
    if is_deleted(conn, rec.id):
        return [_fail(ctx, rec.gid, 422, "deleted", "The record is deleted")] + extra
    snapshot = dict(version.snapshot or {})
    content = {k: snapshot[k] for k in CONTENT if k in snapshot}
    conn.execute(update(records_t).where(records_t.c.id == rec.id)
                 .values(**content, updated_on=ctx.now))
    new = write_versions(conn, [rec.id], editor=ctx.actor, now=ctx.now,
                         comment=comment.format(n=version.number))
    reindex(conn, [rec.id])  # title and fields changed
    number = conn.execute(select(versions_t.c.number).where(versions_t.c.id == new[rec.id])
                          ).scalar_one()
    with Session(bind=conn) as session:
        record = session.execute(select(Record).where(Record.id == rec.id)).scalars().one()
        public = records_public(session, [record])[rec.gid]
    ctx.effects.changed("UPDATE", [rec.gid])
    ctx.effects.result = Result(200, {"record": public,
                                      "version": {"id": new[rec.id], "number": number}})
    return extra


def _fail(ctx: Context, gid: str, status: int, code: str, message: str) -> Failure:
    ctx.effects.result = error_result(status, code, message, record=gid)
    return Failure(gid, message)
