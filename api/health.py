"""Health for orchestrators, and ``/metrics`` (Prometheus).

* ``/livez``: 200 while the process runs and serves requests; it checks nothing else, so an
  orchestrator restarts the process only when the process itself is stuck, never because the
  database or Redis is away (a restart would not bring them back).
* ``/readyz``: 200 when the database and Redis answer, else 503 with the failed checks; a
  load balancer sends no traffic to a process that could not serve it.
* ``/healthz``: as before, the same checks as ``/readyz`` (one endpoint for simple set-ups).
* ``/metrics``: open, unless ``METRICS_TOKEN`` is set; then it takes
  ``Authorization: Bearer <METRICS_TOKEN>`` and answers 401 otherwise.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel

from api.metrics import CLUSTER
from bulkjobs.connections import get_redis
from bulkjobs.errors import Unauthorized
from bulkjobs.metrics import metrics_allowed
from models.engine import database_answers

router = APIRouter(tags=["ops"])

#: OpenAPI: no credentials needed.
PUBLIC: dict[str, Any] = {"security": []}


class Health(BaseModel):
    status: Literal["ok", "unavailable"]
    checks: dict[str, str]


class Live(BaseModel):
    status: Literal["ok"]


@router.get("/livez", response_model=Live, openapi_extra=PUBLIC)
def livez() -> dict[str, str]:
    """Liveness: 200 while the process serves requests, whatever the database and Redis do."""
    return {"status": "ok"}


READY: dict[int | str, dict[str, Any]] = {
    200: {"model": Health},
    503: {"model": Health, "description": "the database or Redis does not answer"}}


@router.get("/readyz", response_model=None, openapi_extra=PUBLIC, responses=READY)
def readyz() -> Any:
    """Readiness: 200 when the database and Redis answer, else 503 naming the failed check."""
    return _checked()


@router.get("/healthz", response_model=None, openapi_extra=PUBLIC, responses=READY)
def healthz() -> Any:
    """Liveness and readiness in one: 200 when the database and Redis answer, else 503."""
    return _checked()


def _checked() -> JSONResponse:
    checks: dict[str, str] = {}
    try:
        database_answers()
        checks["database"] = "ok"
    except Exception as exc:  # any failure is a failed check, reported as such
        checks["database"] = f"error: {type(exc).__name__}"
    try:
        get_redis().ping()
        checks["redis"] = "ok"
    except Exception as exc:
        checks["redis"] = f"error: {type(exc).__name__}"
    healthy = all(v == "ok" for v in checks.values())
    return JSONResponse({"status": "ok" if healthy else "unavailable", "checks": checks},
                        status_code=200 if healthy else 503)


@router.get("/metrics", response_class=Response, openapi_extra=PUBLIC, responses={
    200: {"description": "Prometheus text exposition format",
          "content": {"text/plain": {"schema": {"type": "string"}}}},
    401: {"description": "METRICS_TOKEN is set and the request does not carry it as its "
                         "bearer token"}})
def metrics(request: Request) -> Response:
    """Prometheus metrics: this web process's own, then the deployment's job metrics.  With
    ``METRICS_TOKEN`` set, only for ``Authorization: Bearer <METRICS_TOKEN>``."""
    if not metrics_allowed(request.headers.get("authorization", "")):
        raise Unauthorized("metrics need the METRICS_TOKEN bearer token")
    return Response(generate_latest() + generate_latest(CLUSTER), media_type=CONTENT_TYPE_LATEST)

