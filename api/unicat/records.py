"""Unicat record endpoints: reads (``root``, ``get``, ``children``) and single-record edits
(``create``, ``update``, ``publish``, ``unpublish``, ``delete``, ``undelete``).  Edits are
done in the request, write a version or workflow entry, and append a ``records`` event to the
project's sync space."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter
from sqlalchemy import select

from api.deps import Actor, MemberDep, SessionDep
from api.unicat.bodies import (
    ChildrenBody,
    RecordBody,
    RecordCreateBody,
    RecordsBulkGetBody,
    RecordsBulkPreviewBody,
    RecordsGetBody,
    RecordsSearchBody,
    RecordUpdateBody,
)
from api.unicat.envelope import ok
from api.unicat.responses import (
    ChildrenOut,
    RecordOut,
    RecordsBulkOut,
    RecordsBulkPreviewOut,
    RecordsGetOut,
    RecordsPageOut,
    RootOut,
    answers,
)
from bulkjobs.connections import get_synclog
from bulkjobs.errors import BadRequest, Unprocessable
from bulkjobs.synclog import record_event
from models import editing, reads
from models.engine import get_engine, get_write_engine
from models.queries import records_public
from models.records import Record
from models.search.sql import search_count, search_ids
from models.selection import parse_search, parse_selection
from worker.jobs.records import delete_batch, undelete_batch
from worker.jobs.single_edits import edit_one
from worker.preview import preview

router = APIRouter(prefix="/api/p/{project}/records", tags=["unicat: records"])


@router.post("/root", **answers(RootOut))
def root(project: str, actor: MemberDep, session: SessionDep) -> Any:
    """The project's root record."""
    rec = session.execute(select(Record).where(
        Record.project_gid == project, Record.parent_id.is_(None))).scalars().first()
    if rec is None:
        raise Unprocessable("The project has no root record")
    return ok({"root": rec.gid}, {"records": records_public(session, [rec])})


@router.post("/get", **answers(RecordsGetOut))
def get(project: str, body: RecordsGetBody, actor: MemberDep, session: SessionDep) -> Any:
    """One record (``record``) or several (``records``); unknown gids are left out."""
    if body.record is None and body.records is None:
        raise BadRequest("record or records is required")
    gids = [body.record] if body.record is not None else list(body.records or [])
    recs = session.execute(select(Record).where(
        Record.gid.in_(gids), Record.project_gid == project)).scalars().all()
    by_gid = {r.gid: r for r in recs}
    found = [g for g in dict.fromkeys(gids) if g in by_gid]
    if body.record is not None:
        if not found:
            raise Unprocessable("Record not found", info={"record": body.record})
        result: dict[str, Any] = {"record": body.record}
    else:
        result = {"records": found}
    return ok(result, {"records": records_public(session, [by_gid[g] for g in found])})


@router.post("/children", **answers(ChildrenOut))
def children(project: str, body: ChildrenBody, actor: MemberDep, session: SessionDep) -> Any:
    """A page of a record's live children, optionally in a channel and an ordering."""
    parent = session.execute(select(Record).where(
        Record.gid == body.record, Record.project_gid == project)).scalars().first()
    if parent is None:
        raise Unprocessable("Record not found", info={"record": body.record})
    ids, total = reads.children_page(
        session.connection(), parent_id=parent.id, channel=body.channel, ordering=body.ordering,
        orderings=actor.project.orderings, top=body.page_top, size=body.page_size)
    by_id = {r.id: r for r in session.execute(select(Record).where(Record.id.in_(ids))).scalars()}
    page = [by_id[i] for i in ids]
    return ok({"children": [r.gid for r in page], "children.size": total},
              {"records": records_public(session, page)})


def _answer(session: SessionDep, actor: Actor, gid: str, action: str = "UPDATE") -> Any:
    get_synclog().append(actor.project.gid, [record_event(
        project=actor.project.gid, data_type="records", gid=gid, action=action)])
    # End the request session's read snapshot (taken before the edit) to see the edit.
    session.commit()
    rec = session.execute(select(Record).where(Record.gid == gid)).scalars().one()
    return ok({"record": gid}, {"records": records_public(session, [rec])})


@router.post("/create", **answers(RecordOut))
def create(project: str, body: RecordCreateBody, actor: MemberDep, session: SessionDep) -> Any:
    """Create a record as the last child of `parent` (version 0)."""
    with get_write_engine().begin() as conn:
        gid = editing.create(conn, actor.project, parent_gid=body.parent,
                             editor=actor.as_editor(), title=body.title, fields=body.fields,
                             definition=body.definition, channels=body.channels)
    return _answer(session, actor, gid, "INSERT")


@router.post("/update", **answers(RecordOut))
def update(project: str, body: RecordUpdateBody, actor: MemberDep, session: SessionDep) -> Any:
    """Change title, fields, channels or orderings of a record (a new version)."""
    with get_write_engine().begin() as conn:
        editing.update_content(conn, actor.project, gid=body.record, editor=actor.as_editor(),
                               title=body.title, fields=body.fields, channels=body.channels,
                               orderings=body.orderings)
    return _answer(session, actor, body.record)


@router.post("/publish", **answers(RecordOut))
def publish(project: str, body: RecordBody, actor: MemberDep, session: SessionDep) -> Any:
    """Publish a record: its current version becomes the published one."""
    with get_write_engine().begin() as conn:
        editing.set_published(conn, actor.project, gid=body.record, editor=actor.as_editor(),
                              published=True)
    return _answer(session, actor, body.record)


@router.post("/unpublish", **answers(RecordOut))
def unpublish(project: str, body: RecordBody, actor: MemberDep, session: SessionDep) -> Any:
    """Unpublish a record (back to draft)."""
    with get_write_engine().begin() as conn:
        editing.set_published(conn, actor.project, gid=body.record, editor=actor.as_editor(),
                              published=False)
    return _answer(session, actor, body.record)


def _single(actor: Actor, gid: str, batch: Any, message: str) -> None:
    with get_write_engine().begin() as conn:
        failure = edit_one(conn, batch, project_gid=actor.project.gid, gid=gid,
                           actor=actor.as_editor(), now=time.time())
        if failure is not None:
            raise Unprocessable(message, info={"record": gid, "reason": failure.reason})


@router.post("/delete", **answers(RecordOut))
def delete(project: str, body: RecordBody, actor: MemberDep, session: SessionDep) -> Any:
    """Soft-delete a record with its subtree and the links pointing into it."""
    _single(actor, body.record, delete_batch, "Deletion failed")
    return _answer(session, actor, body.record, "DELETE")


@router.post("/undelete", **answers(RecordOut))
def undelete(project: str, body: RecordBody, actor: MemberDep, session: SessionDep) -> Any:
    """Undelete a record with everything its deletion took along."""
    _single(actor, body.record, undelete_batch, "Undeletion failed")
    return _answer(session, actor, body.record)


def _in_order(session: SessionDep, ids: list[int]) -> list[Record]:
    rows = session.execute(select(Record).where(Record.id.in_(ids))).scalars().all() if ids \
        else []
    by_id = {r.id: r for r in rows}
    return [by_id[i] for i in ids if i in by_id]


@router.post("/search", **answers(RecordsPageOut))
def search(project: str, body: RecordsSearchBody, actor: MemberDep, session: SessionDep) -> Any:
    """A page of the records a search finds, in relevance order."""
    query = {"language": body.language, "q": body.q, "filter": body.filter}
    parsed = parse_search({k: v for k, v in query.items() if v is not None})
    conn = session.connection()
    ids = search_ids(conn, project_gid=actor.project.gid, search=parsed,
                     offset=body.page_top, limit=body.page_size)
    total = search_count(conn, project_gid=actor.project.gid, search=parsed)
    recs = _in_order(session, ids)
    return ok({"records": [r.gid for r in recs], "records.size": total},
              {"records": records_public(session, recs)})


@router.post("/bulk/get", **answers(RecordsBulkOut))
def bulk_get(project: str, body: RecordsBulkGetBody, actor: MemberDep,
             session: SessionDep) -> Any:
    """A page of the selection's records; follow `page.cursor` until it is null."""
    selection = parse_selection(body.selection, kind="records")
    result = reads.read_page(get_engine(), project_gid=actor.project.gid, user_gid=actor.user,
                             selection=selection, cursor=body.page_cursor,
                             size=body.page_size)
    session.commit()  # a fresh snapshot: see the rows the page just resolved
    recs = _in_order(session, result.ids)
    return ok({"records": [r.gid for r in recs], "records.size": result.total,
               "page.cursor": result.cursor}, {"records": records_public(session, recs)})


@router.post("/bulk/preview", **answers(RecordsBulkPreviewOut))
def bulk_preview(project: str, body: RecordsBulkPreviewBody, actor: MemberDep) -> Any:
    """What `records/bulk/<job>` of the selection would take, without queueing or writing."""
    selection = parse_selection(body.selection, kind="records")
    result = preview(get_engine(), project_gid=actor.project.gid, job=body.job,
                     selection=selection)
    return ok(result.public())
