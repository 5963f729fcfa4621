"""Unicat job endpoints: the bulk operations of SPEC §5,
``jobs/get|detail|list|cancel|failures|retry`` and ``jobs/pause|resume``
(:mod:`worker.pausing`)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from sqlalchemy import select
from sqlmodel import col

from api.deps import Actor, MemberDep, OwnerDep, SessionDep, bearer
from api.queueing import (
    Idempotency,
    IdempotencyDep,
    queue_for,
    queue_job,
    queue_submission,
    replayed,
)
from api.unicat.bodies import JobBody, JobFailuresBody, JobsListBody, RecordBody, SelectionBody
from api.unicat.envelope import ok
from api.unicat.responses import (
    JobDetailOut,
    JobFailuresOut,
    JobQueuedOut,
    JobsListOut,
    JobsPausedOut,
    JobsResumedOut,
    JobStateOut,
    PermanentDeleteOut,
    answers,
)
from bulkjobs import cursors
from bulkjobs.connections import get_synclog
from bulkjobs.errors import BadRequest, NotFound, Unprocessable
from bulkjobs.synclog.history import job_events
from bulkjobs.tokens import renew, verify
from models import failures, job_list
from models.job_detail import detail
from models.jobs import Job, public_state
from models.pauses import is_paused
from models.queries import records_public
from models.records import Record, RecordTombstone
from worker.app import enqueue_many
from worker.deps import Deps
from worker.jobs import CATALOGUE
from worker.pausing import pause_jobs, resume
from worker.rerun import retry_submission
from worker.submit import cancel

router = APIRouter(prefix="/api/p/{project}", tags=["unicat: jobs"])


def queue(actor: Actor, job: str, params: dict[str, Any],
          idempotency: Idempotency | None = None) -> dict[str, Any]:
    """Queue a job for a member checked by the route's dependency (at most once per
    idempotency key); the Unicat answer.  Queueing takes a database connection of its own:
    a route hands its session's back first (``session.commit()``), or requests each holding
    one while they wait for another could exhaust the pool."""
    return ok({"job.token": queue_job(actor, job, params, idempotency)})


#: The bulk routes read their body and headers themselves (:func:`queued`); this documents
#: them.
SELECTION_BODY: dict[str, Any] = {
    "requestBody": {"required": True, "content": {
        "application/json": {"schema": {"$ref": "#/components/schemas/SelectionBody"}}}},
    "parameters": [{"name": "Idempotency-Key", "in": "header", "required": False,
                    "schema": {"type": "string", "maxLength": 255},
                    "description": "Makes the request safe to retry (see the README)."}]}


async def queued(request: Request, project: str, job: str) -> JSONResponse:
    """Queue ``job`` over the body's selection; the Unicat answer.

    The request is counted against the rate limit, its user's membership checked and the
    job queued in one batch with the other requests of the moment (:mod:`api.queueing`).
    The body is parsed here rather than by FastAPI so that all of that is one hand-over;
    a body that does not parse still has the access checked first (a stranger gets 403,
    whatever the body), then gets the same 400 as FastAPI's own validation gives.  The JWT
    is verified here too, not by a dependency: the route then has none to resolve."""
    c = verify(bearer(request))
    try:
        body = await request.body()
        params: dict[str, Any] | None = {
            "selection": SelectionBody.model_validate_json(body or b"null").selection}
    except ValidationError as exc:
        params, invalid = None, exc
    token, c = await queue_for(request, c, project, job, params,
                               Idempotency.of(request, body))
    if params is None:
        raise RequestValidationError([
            {**e, "loc": ("body", *e["loc"])} if body else
            {"type": "missing", "loc": ("body",), "msg": "Field required"}
            for e in invalid.errors()])
    # Answered whole here (FastAPI's encoding of a returned dict is not needed for a token).
    return JSONResponse(ok({"job.token": token}),
                        headers={"Authorization": renew(c)})


@router.post("/records/bulk/delete", openapi_extra=SELECTION_BODY, **answers(JobQueuedOut))
async def bulk_delete(project: str, request: Request) -> Any:
    """Soft-delete the selected live records with their subtrees (a job)."""
    return await queued(request, project, "bulk_delete_records")


@router.post("/records/bulk/undelete", openapi_extra=SELECTION_BODY, **answers(JobQueuedOut))
async def bulk_undelete(project: str, request: Request) -> Any:
    """Undelete the selected deleted records with their subtrees and links (a job)."""
    return await queued(request, project, "bulk_undelete_records")


@router.post("/records/bulk/permanent_delete", openapi_extra=SELECTION_BODY,
             **answers(JobQueuedOut))
async def bulk_permanent_delete(project: str, request: Request) -> Any:
    """Remove the selected deleted records for good, with subtrees, links and history (a job)."""
    return await queued(request, project, "bulk_permanent_delete_records")


@router.post("/records/permanent_delete", **answers(PermanentDeleteOut))
def permanent_delete(project: str, body: RecordBody, actor: MemberDep,
                     session: SessionDep, idempotency: IdempotencyDep) -> Any:
    """Remove one deleted record for good (a job); answers with its parent."""
    rec = session.execute(select(Record).where(
        Record.gid == body.record, Record.project_gid == actor.project.gid)).scalars().first()
    if rec is not None:
        parent = session.get(Record, rec.parent_id) if rec.parent_id is not None else None
        session.commit()  # the connection back before queueing takes one (see queue)
        answer = queue(actor, "permanent_delete_record", {"selection": [body.record]},
                       idempotency)
    else:  # a retry under an Idempotency-Key, after its job removed the record?
        token = replayed(actor, idempotency)
        if token is None:
            raise Unprocessable("Record not found", info={"record": body.record})
        parent_gid = session.execute(select(col(RecordTombstone.parent_gid)).where(
            col(RecordTombstone.gid) == body.record)).scalar()
        parent = session.execute(select(Record).where(
            col(Record.gid) == parent_gid, col(Record.project_gid) == actor.project.gid)
        ).scalars().first() if parent_gid is not None else None
        answer = ok({"job.token": token})
    answer["result"]["parent"] = parent.gid if parent else None
    if parent is not None:
        answer["data"] = {"records": records_public(session, [parent])}
    return answer


def job_public(job: Job) -> dict[str, Any]:
    return {"token": job.token, **job.public()}


@router.post("/jobs/get", **answers(JobStateOut))
def jobs_get(project: str, body: JobBody, actor: MemberDep, session: SessionDep) -> Any:
    """The current state of one job."""
    job = session.get(Job, body.job)
    if job is None or job.project_gid != actor.project.gid:
        raise NotFound("no such job", info={"job": body.job})
    return ok({"job": job_public(job)})


@router.post("/jobs/detail", **answers(JobDetailOut))
def jobs_detail(project: str, body: JobBody, actor: MemberDep, session: SessionDep) -> Any:
    """One job in full: its state, selection, other parameters, when it started and
    finished, and its events as the sync log still holds them."""
    job = detail(session, actor.project.gid, body.job)
    if job is None:
        raise NotFound("no such job", info={"job": body.job})
    history = job_events(get_synclog(), body.job, created_on=job["created_on"])
    return ok({"job": job, "events": [e.as_dict() for e in history.events],
               "events.complete": history.complete})


@router.post("/jobs/list", **answers(JobsListOut))
def jobs_list(project: str, body: JobsListBody, actor: MemberDep, session: SessionDep) -> Any:
    """The project's jobs, newest first, paged with ``page.cursor``; optionally only those of
    one status or kind, created in a time range, or whose token starts with a prefix."""
    if body.job is not None and body.job not in CATALOGUE:
        raise BadRequest(f"unknown job {body.job!r}", info={"job": body.job})
    page, cursor = job_list.page(
        session, project_gid=actor.project.gid, status=body.status, job=body.job,
        token_prefix=body.token_prefix, created_after=body.created_after,
        created_before=body.created_before, page_cursor=body.page_cursor,
        page_size=body.page_size)
    return ok({"jobs": [job_public(j) for j in page], "page.cursor": cursor})


@router.post("/jobs/cancel", **answers(JobStateOut))
def jobs_cancel(project: str, body: JobBody, actor: MemberDep) -> Any:
    """Stop a job after its current batch; it ends `rejected` with `info.error` "cancelled"."""
    row = cancel(project_gid=actor.project.gid, token=body.job, log=get_synclog())
    return ok({"job": public_state(row)})


@router.post("/jobs/failures", **answers(JobFailuresOut))
def jobs_failures(project: str, body: JobFailuresBody, actor: MemberDep,
                  session: SessionDep) -> Any:
    """Every item the job failed, with its reason, in the order it failed them, paged with
    ``page.cursor`` (``info.errors`` holds the first 20 only)."""
    owner = session.execute(select(col(Job.project_gid)).where(col(Job.token) == body.job)
                            ).scalar()
    if owner != actor.project.gid:
        raise NotFound("no such job", info={"job": body.job})
    after = cursors.decode(body.page_cursor, (int,))[0] if body.page_cursor else 0
    rows = failures.page(session.connection(), body.job, after=after, size=body.page_size + 1)
    page = rows[: body.page_size]
    cursor = cursors.encode([page[-1][0]]) if len(rows) > body.page_size else None
    return ok({"job": body.job, "failures": [{"gid": gid, "reason": reason}
                                             for _, gid, reason in page],
               "page.cursor": cursor})


@router.post("/jobs/retry", **answers(JobQueuedOut))
def jobs_retry(project: str, body: JobBody, actor: MemberDep, session: SessionDep,
               idempotency: IdempotencyDep) -> Any:
    """Queue a job of the same kind and parameters over exactly the failed items of a
    finished job; 422 when it has not finished or failed no item."""
    submission = retry_submission(session.connection(), project_gid=actor.project.gid,
                                  token=body.job, actor=actor.as_editor())
    session.commit()  # the connection back before queueing takes one (see queue)
    return ok({"job.token": queue_submission(submission, idempotency)})


@router.post("/jobs/pause", **answers(JobsPausedOut))
def jobs_pause(project: str, actor: OwnerDep) -> Any:
    """Pause the project's jobs (owners only): running jobs stop after their current batch
    with `info.paused` true, status unchanged; queued jobs wait.  Pausing twice is a no-op."""
    pause_jobs(Deps.default(get_synclog(), heartbeat=False), actor.project.gid, by=actor.user)
    return ok({"paused": True})


@router.post("/jobs/resume", **answers(JobsResumedOut))
def jobs_resume(project: str, actor: OwnerDep) -> Any:
    """Resume the project's paused jobs where they stopped (owners only); they stay paused
    while every project's jobs are (the ops switch)."""
    deps = Deps.default(get_synclog(), heartbeat=False)
    tokens = resume(deps, actor.project.gid, enqueue=enqueue_many)
    with deps.engine.connect() as conn:
        paused = is_paused(conn, actor.project.gid)
    return ok({"paused": paused, "resumed": tokens})
