"""Unicat ``records/definition/…``: a record's extended definition (see
:mod:`models.extended`).  Each answer names the record and the definition it now uses, with
both in ``data``; the record's ``records`` event and the definition's ``definitions`` event
go to the project's sync space after the commit."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter
from sqlalchemy import select

from api.deps import Actor, MemberDep, SessionDep
from api.unicat.bodies import RecordBody, RecordClassBody
from api.unicat.envelope import ok
from api.unicat.responses import RecordDefinitionOut, answers
from bulkjobs.connections import get_synclog
from bulkjobs.synclog import record_event
from models import extended, schema_editing
from models.engine import get_write_engine
from models.queries import records_public
from models.records import Record

router = APIRouter(prefix="/api/p/{project}/records/definition",
                   tags=["unicat: records"])


def _changed(actor: Actor, session: SessionDep, record: str,
             change: Callable[[Any], schema_editing.EditResult]) -> Any:
    with get_write_engine().begin() as conn:
        result = change(conn)
        rows = schema_editing.get(conn, actor.project.gid, "definition", [result.gid])
    project = actor.project.gid
    get_synclog().append(project, [
        *schema_editing.events(project, result.changes),
        record_event(project=project, data_type="records", gid=record, action="UPDATE"),
    ])
    session.commit()  # a fresh read snapshot, after the edit
    rec = session.execute(select(Record).where(Record.gid == record)).scalars().one()
    return ok({"record": record, "definition": result.gid},
              {"records": records_public(session, [rec]),
               **schema_editing.public_data(rows)})


@router.post("/classes/add", **answers(RecordDefinitionOut))
def classes_add(project: str, body: RecordClassBody, actor: MemberDep,
                session: SessionDep) -> Any:
    """Add a committed class to the record's definition (extending it for this record)."""
    return _changed(actor, session, body.record, lambda conn: extended.change_classes(
        conn, actor.project, record_gid=body.record, editor=actor.as_editor(),
        add=[body.class_]))


@router.post("/classes/remove", **answers(RecordDefinitionOut))
def classes_remove(project: str, body: RecordClassBody, actor: MemberDep,
                   session: SessionDep) -> Any:
    """Remove a class from the record's definition (extending it for this record)."""
    return _changed(actor, session, body.record, lambda conn: extended.change_classes(
        conn, actor.project, record_gid=body.record, editor=actor.as_editor(),
        remove=[body.class_]))


@router.post("/revert", **answers(RecordDefinitionOut))
def revert(project: str, body: RecordBody, actor: MemberDep, session: SessionDep) -> Any:
    """Put the record back on the definition it extended; the extended one is removed."""
    return _changed(actor, session, body.record, lambda conn: extended.revert(
        conn, actor.project, record_gid=body.record, editor=actor.as_editor()))
