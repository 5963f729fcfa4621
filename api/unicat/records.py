"""Unicat record reads: ``records/root``, ``records/get``, ``records/children``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from sqlalchemy import func, select

from api.deps import MemberDep, SessionDep
from api.unicat.bodies import ChildrenBody, RecordsGetBody
from api.unicat.envelope import ok
from bulkjobs.errors import BadRequest, Unprocessable
from models.queries import records_public
from models.records import LIVE_STATUSES, Record

router = APIRouter(prefix="/api/p/{project}/records", tags=["unicat: records"])


@router.post("/root")
def root(project: str, actor: MemberDep, session: SessionDep) -> Any:
    """The project's root record."""
    rec = session.execute(select(Record).where(
        Record.project_gid == project, Record.parent_id.is_(None))).scalars().first()
    if rec is None:
        raise Unprocessable("The project has no root record")
    return ok({"root": rec.gid}, {"records": records_public(session, [rec])})


@router.post("/get")
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


@router.post("/children")
def children(project: str, body: ChildrenBody, actor: MemberDep, session: SessionDep) -> Any:
    """A page of a record's live children, optionally in a channel and an ordering."""
    parent = session.execute(select(Record).where(
        Record.gid == body.record, Record.project_gid == project)).scalars().first()
    if parent is None:
        raise Unprocessable("Record not found", info={"record": body.record})
    query = select(Record).where(Record.parent_id == parent.id,
                                 Record.status.in_(LIVE_STATUSES))
    rows = session.execute(query.order_by(Record.id)).scalars().all()
    if body.channel:
        rows = [r for r in rows if body.channel in (r.channels or [])]
    if body.ordering and body.ordering in actor.project.orderings:
        key = body.ordering
        rows.sort(key=lambda r: (key not in (r.orderings or {}), (r.orderings or {}).get(key, 0),
                                 r.id))
    page = rows[body.page_top: body.page_top + body.page_size]
    total = session.execute(select(func.count()).select_from(query.subquery())).scalar_one()
    return ok({"children": [r.gid for r in page], "children.size": len(rows) if body.channel
               else total}, {"records": records_public(session, page)})
