"""Plone dialect routes (``/plone/p/<project>/<record gid>``): ``@history`` — a thin façade
over the core.

* ``GET @history``: :func:`models.history_reads.history`, newest first, at most
  :data:`HISTORY_LIMIT` entries (still a bare array, as Plone answers); ``[]`` when the
  record has no history;
* ``GET @history/<n>``: the snapshot of version ``n`` (``current`` for the newest); a ``n``
  that is not an integer is 400, an unknown one 404;
* ``PATCH @history {"version": n}``: queues the core job ``revert_record_version``, then
  waits for its terminal event on the sync log (``XREAD BLOCK``, no polling) for up to
  :data:`REVERT_WAIT` seconds — asynchronously, holding no thread and no database
  connection (:func:`wait_terminal`): 200 ``{"message": "<title> has been
  reverted to revision n."}`` when it is done, the job's error (its result status and
  message) when it failed, or 202 ``{"message", "job": <token>, "status"}`` while it is
  still queued or running.

Any JWT or an API key of the project is accepted as the bearer token.  ``<title>`` is the
record's title in the project's first language (its gid when it has none there).
"""

from __future__ import annotations

import re
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlmodel import Session
from starlette.concurrency import run_in_threadpool

from api.deps import Actor, CredentialsMemberDep, SessionDep
from api.plone import envelope
from api.plone.envelope import as_dict
from api.plone.schemas import (
    ERRORS,
    HistoricalVersion,
    HistoryEntry,
    RevertBody,
    Reverted,
    RevertRunning,
)
from api.queueing import Idempotency, IdempotencyDep, queue_job
from bulkjobs import keys
from bulkjobs.connections import get_synclog, terminal_waiters
from bulkjobs.errors import BadRequest, NotFound, error_for_status
from models.history_reads import current_version, find_version, history, live_record, users_by_gid
from models.jobs import DONE, REJECTED, TERMINAL, Job
from models.records import Record

router = APIRouter(prefix="/plone/p/{project}/{record}", tags=["plone"], responses=ERRORS)

#: Seconds ``PATCH @history`` waits for the revert job before answering 202.
REVERT_WAIT = 30.0

#: The most entries ``GET @history`` answers: the newest ones.  Plone's answer is a bare
#: array with no paging, and a record's history grows with every edit and bulk job.
HISTORY_LIMIT = 1000

_INTEGER = re.compile(r"-?[0-9]{1,30}")


def urls(request: Request, project: str, gid: str) -> tuple[str, str]:
    """The site's URL (the project) and the record's."""
    site = f"{str(request.base_url).rstrip('/')}/plone/p/{project}"
    return site, f"{site}/{gid}"


def title_of(title: Any, lang: str, gid: str) -> str:
    value = title.get(lang) if isinstance(title, dict) else None
    return value if isinstance(value, str) and value else gid


@router.get("/@history", response_model=None,
            responses={200: {"model": list[HistoryEntry]}})
def get_history(project: str, record: str, request: Request, actor: CredentialsMemberDep,
                session: SessionDep) -> Any:
    """The record's history (versions and workflow changes), newest first, at most 1,000."""
    rec = live_record(session, actor.project.gid, record)
    entries = history(session, rec, limit=HISTORY_LIMIT)
    users = users_by_gid(session, [e.actor.get("id") for e in entries])
    site, obj_url = urls(request, actor.project.gid, rec.gid)
    may_revert = True  # live_record finds live records only, and a live record may revert
    return [envelope.history_entry(e, obj_url=obj_url, site=site, users=users,
                                   may_revert=may_revert) for e in entries]


@router.get("/@history/{version}", response_model=None,
            responses={200: {"model": HistoricalVersion}})
def get_version(project: str, record: str, version: str, request: Request,
                actor: CredentialsMemberDep, session: SessionDep) -> Any:
    """The record as it was at one version (``current``: the newest)."""
    rec = live_record(session, actor.project.gid, record)
    if version == "current":
        found = current_version(session, rec)
    elif _INTEGER.fullmatch(version):
        found, _ = find_version(session, rec.project_gid, record_id=rec.id,
                                number=int(version))
    else:
        raise BadRequest("version must be an integer or 'current'", info={"version": version})
    _, obj_url = urls(request, actor.project.gid, rec.gid)
    return envelope.historical(rec, found, obj_url=obj_url, lang=actor.language)


@router.patch("/@history", response_model=None,
              responses={200: {"model": Reverted}, 202: {"model": RevertRunning}})
async def revert(project: str, record: str, body: RevertBody, actor: CredentialsMemberDep,
                 session: SessionDep, idempotency: IdempotencyDep) -> Any:
    """Revert the record to a version (a job; waits up to 30 s for it, else 202)."""
    rec, token, after = await run_in_threadpool(_queue_revert, session, actor, record,
                                                body.version, idempotency)
    # On the event loop, with no database connection held: the wait takes neither a thread
    # nor a connection from their pools, however many reverts wait at once.  A retry under
    # an Idempotency-Key answers the job its first request queued, which may have ended
    # before ``after``: its end is read from the job row instead.
    job = await run_in_threadpool(_job_now, session, token) if idempotency else None
    if job is None or job.status not in TERMINAL:
        await wait_terminal(token, after=after, timeout=REVERT_WAIT)
        job = await run_in_threadpool(_job_now, session, token)
    lang = actor.language
    if job.status == DONE:
        record_public = as_dict((job.result_payload or {}).get("record"))
        title = title_of(record_public.get("title"), lang, rec.gid)
        return {"message": f"{title} has been reverted to revision {body.version}."}
    if job.status == REJECTED:
        error = as_dict((job.result_payload or {}).get("error"))
        message = error.get("message") or (job.info or {}).get("error") or "Revert failed"
        raise error_for_status(int(job.result_status or 500), str(message),
                               info={"job": token})
    title = title_of(rec.title, lang, rec.gid)
    return JSONResponse({"message": f"{title} is being reverted to revision {body.version}.",
                         "job": token, "status": job.status}, status_code=202)


async def wait_terminal(token: str, *, after: int, timeout: float) -> bool:
    """Wait for the job's terminal event after ``after``: on the event loop's shared reader
    (:func:`bulkjobs.connections.terminal_waiters`), so that reverts waiting at once share
    one connection and read each event once."""
    return await terminal_waiters().wait(token, after=after, timeout=timeout)


def _queue_revert(session: Session, actor: Actor, record: str, version: int,
                  idempotency: Idempotency | None) -> tuple[Record, str, int]:
    """Check the record and the version, queue the revert job: the record, the job's token
    and the ``cc`` cursor its terminal event comes after.  The session's connection is
    handed back before the job is queued (see :func:`api.deps._checked`)."""
    rec = live_record(session, actor.project.gid, record)
    # 404 now rather than from the job
    find_version(session, rec.project_gid, record_id=rec.id, number=version)
    session.commit()
    after = get_synclog().cursor(keys.CC_SPACE)  # before queueing: the terminal event follows
    token = queue_job(actor, "revert_record_version", {"selection": [rec.gid], "version": version},
                      idempotency)
    return rec, token, after


def _job_now(session: Session, token: str) -> Job:
    """The job as it is now (a fresh snapshot); the connection is handed back after."""
    session.commit()
    # Read again even when the session holds the job already: a retry under an
    # Idempotency-Key reads it before its wait too, and commits here expire nothing.
    job = session.get(Job, token, populate_existing=True)
    session.commit()
    if job is None:  # written by queue_job; only a wiped database loses it
        raise NotFound("The revert job is gone", info={"job": token})
    return job
