"""DatoCMS dialect routes (``/dato/p/<project>``): items, their versions, version restore
as an asynchronous job, and job results — a thin façade over the core.

* reads go through :mod:`models.history_reads` and :func:`models.queries.records_public`;
* a version is looked up with :func:`models.history_reads.find_version` (a live record's);
* a restore is the core job ``restore_record_version`` (:mod:`worker.jobs.versions`) of the
  version's record, queued through :func:`api.queueing.queue_job`; it answers 202 with the
  job's token as the ``job`` id;
* ``GET /job-results/<token>`` is 404 (``NOT_FOUND``) until the job ends, then 200 with the
  job's result: ``status`` is the HTTP status the restore itself would have answered and
  ``payload`` its body — ``{"data": [item]}``, or an ``api_error`` body for a failure.
  A job that ended without a result reports 200 and a null payload when done, 500 and an
  ``EXCEPTION`` error (its ``info.error``) when rejected.

Any JWT or an API key of the project is accepted as the bearer token; ``X-Api-Version`` is
accepted and ignored (version 3 is what is served).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse
from sqlalchemy import select
from sqlmodel import Session, col

from api.dato import envelope
from api.dato.envelope import as_dict
from api.dato.schemas import ERRORS, ItemOut, JobOut, JobResultOut, VersionOut, VersionsOut
from api.deps import CredentialsMemberDep, SessionDep
from api.queueing import IdempotencyDep, queue_job
from bulkjobs.errors import NotFound
from models.history_reads import Marks, find_version, live_record, version_marks, versions_page
from models.jobs import DONE, TERMINAL, Job
from models.queries import records_public
from models.records import Record

router = APIRouter(prefix="/dato/p/{project}", tags=["datocms"], responses=ERRORS)

PAGE_DEFAULT, PAGE_MAX = 15, 50


@router.get("/items/{item_id}", response_model=None, responses={200: {"model": ItemOut}})
def get_item(project: str, item_id: str, actor: CredentialsMemberDep,
             session: SessionDep) -> Any:
    """One record as a DatoCMS item."""
    rec = live_record(session, actor.project.gid, item_id)
    marks = version_marks(session, [rec.id or 0]).get(rec.id or 0, Marks())
    public = records_public(session, [rec])[rec.gid]
    return {"data": envelope.item(public, actor.language, marks)}


@router.get("/items/{item_id}/versions", response_model=None,
            responses={200: {"model": VersionsOut}})
def list_versions(
    project: str, item_id: str, actor: CredentialsMemberDep, session: SessionDep,
    offset: int = Query(default=0, alias="page[offset]", ge=0, le=10**9),
    limit: int = Query(default=PAGE_DEFAULT, alias="page[limit]", ge=1, le=PAGE_MAX),
    nested: bool = Query(default=False, description="accepted; records have no blocks"),
) -> Any:
    """A page of a record's versions, newest first (``meta.total_count`` for paging)."""
    rec = live_record(session, actor.project.gid, item_id)
    rows, total = versions_page(session, rec, offset=offset, limit=limit)
    lang = actor.language
    return {"data": [envelope.item_version(v, rec.gid, lang) for v in rows],
            "meta": {"total_count": total}}


@router.get("/versions/{version_id}", response_model=None,
            responses={200: {"model": VersionOut}})
def get_version(project: str, version_id: str, actor: CredentialsMemberDep,
                session: SessionDep,
                nested: bool = Query(default=False, description="accepted; ignored")) -> Any:
    """One record version."""
    version, rec = find_version(session, actor.project.gid, version_id=version_id, live=True)
    return {"data": envelope.item_version(version, rec.gid, actor.language)}


@router.post("/versions/{version_id}/restore", status_code=202, response_model=None,
             responses={202: {"model": JobOut}})
def restore_version(project: str, version_id: str, actor: CredentialsMemberDep,
                    session: SessionDep, idempotency: IdempotencyDep) -> Any:
    """Restore a record version (a job): 202 with the job id to poll in job-results."""
    # 404 now, not in the job result
    _, rec = find_version(session, actor.project.gid, version_id=version_id, live=True)
    # Hand the session's connection back first: queueing takes one of its own from the same
    # pool, and requests each holding one while they wait for another would exhaust it.
    session.commit()
    token = queue_job(actor, "restore_record_version",
                      {"selection": [rec.gid], "version": version_id}, idempotency)
    return JSONResponse({"data": {"type": "job", "id": token}}, status_code=202)


@router.get("/job-results/{job_id}", response_model=None,
            responses={200: {"model": JobResultOut}})
def job_result(project: str, job_id: str, actor: CredentialsMemberDep,
               session: SessionDep) -> Any:
    """The result of an asynchronous job: 404 while it runs, then its status and payload."""
    job = session.get(Job, job_id)
    if job is None or job.project_gid != actor.project.gid:
        raise NotFound("Job not found", info={"job": job_id})
    if job.status not in TERMINAL:
        raise NotFound("The job has not finished yet", info={"job": job_id,
                                                              "status": job.status})
    status, payload = result_of(session, job, actor.language)
    return {"data": {"type": "job_result", "id": job.token,
                     "attributes": {"status": status, "payload": payload}}}


def result_of(session: Session, job: Job, lang: str) -> tuple[int, dict[str, Any] | None]:
    """A finished job's result in DatoCMS terms: ``(status, payload)``."""
    if job.result_status is None:
        if job.status == DONE:
            return 200, None
        reason = str((job.info or {}).get("error") or "the job failed")
        return 500, envelope.error_body(500, reason, {"job": job.token})
    status, payload = int(job.result_status), dict(job.result_payload or {})
    if status >= 400:
        error = as_dict(payload.get("error"))
        return status, envelope.error_body(status, str(error.get("message") or "failed"),
                                           as_dict(error.get("details")))
    record = payload.get("record")
    if not isinstance(record, dict):
        return status, payload
    rid = session.execute(select(col(Record.id)).where(col(Record.gid) == record["gid"])
                          ).scalar()
    marks = version_marks(session, [rid]).get(rid, Marks()) if rid is not None else Marks()
    version = as_dict(payload.get("version"))
    marks = replace(marks, current=version.get("id") or marks.current)
    return status, {"data": [envelope.item(record, lang, marks)]}
