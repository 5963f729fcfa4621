"""Unicat ``/sync``: cursors and polling of the sync log.

``/sync/get`` returns events after the given cursors that the user may see, at most one page
(1,000 events) per space, with ``warning`` when more remain.  Events of projects the user is
not a member of are skipped, but the result's ``cc.cursor`` still advances past them, so a
client that follows it never re-reads them.  Below a space's floor the answer holds the
oldest retained events, ``warning`` and ``"recovered": false``.
"""

from __future__ import annotations

from itertools import islice
from typing import Any

from fastapi import APIRouter

from api.deps import ClaimsDep, SessionDep
from api.unicat.bodies import SyncCursorsBody, SyncGetBody
from api.unicat.envelope import ok
from api.unicat.responses import CursorsOut, SyncGetOut, answers
from bulkjobs import keys
from bulkjobs.connections import get_synclog
from models.accounts import require_member, visible_to

router = APIRouter(prefix="/sync", tags=["unicat: sync"])

#: Pages scanned per request when other projects' events fill them.
MAX_SCANNED_PAGES = 10


@router.post("/cursors", **answers(CursorsOut))
def cursors(body: SyncCursorsBody, c: ClaimsDep, session: SessionDep) -> Any:
    """The current cursors: ``cc.cursor`` and, for a project, its ``cursor``."""
    log = get_synclog()
    result: dict[str, Any] = {"cc.cursor": log.cursor(keys.CC_SPACE)}
    if body.project:
        require_member(session, c, body.project)
        result["cursor"] = log.cursor(body.project)
    return ok(result)


@router.post("/get", **answers(SyncGetOut))
def get(body: SyncGetBody, c: ClaimsDep, session: SessionDep) -> Any:
    """Sync events after the given cursors, in cursor order."""
    log = get_synclog()
    visible = visible_to(session, c)
    events: list[dict[str, Any]] = []
    after = body.cc_cursor
    recovered = True
    more = False
    for page in islice(log.pages(keys.CC_SPACE, after), MAX_SCANNED_PAGES):
        recovered = recovered and page.recovered
        events += [e.as_dict() for e in page.events if e.project in visible]
        if page.events:
            after = page.events[-1].cursor
        more = page.more
        if events:
            break
    result: dict[str, Any] = {"cc.cursor": max(after, body.cc_cursor)}
    if body.project is not None:
        require_member(session, c, body.project)
        ppage = log.read(body.project, body.cursor or 0)
        events += [e.as_dict() for e in ppage.events]
        recovered = recovered and ppage.recovered
        more = more or ppage.more
        # No "cursor" key here: the Unicat client would take it as already handled and skip
        # the project events of this very answer.
    result["sync"] = events
    if more or not recovered:
        result["warning"] = ("more sync events follow; call again" if recovered else
                             "events were lost below the retention floor; reload job states")
    if not recovered:
        result["recovered"] = False
    return ok(result)
