"""``/healthz`` (database and Redis) and ``/metrics`` (Prometheus)."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel
from sqlalchemy import text

from api.metrics import CLUSTER
from bulkjobs.connections import get_redis
from models.engine import get_engine

router = APIRouter(tags=["ops"])

#: OpenAPI: no credentials needed.
PUBLIC: dict[str, Any] = {"security": []}


class Health(BaseModel):
    status: Literal["ok", "unavailable"]
    checks: dict[str, str]


@router.get("/healthz", response_model=None, openapi_extra=PUBLIC, responses={
    200: {"model": Health},
    503: {"model": Health, "description": "the database or Redis does not answer"}})
def healthz() -> Any:
    """Liveness and readiness: 200 when the database and Redis answer, else 503."""
    checks: dict[str, str] = {}
    try:
        with get_engine().connect() as conn:
            conn.execute(text("SELECT 1"))
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


@router.get("/metrics", response_class=Response, openapi_extra=PUBLIC, responses={200: {
    "description": "Prometheus text exposition format",
    "content": {"text/plain": {"schema": {"type": "string"}}}}})
def metrics() -> Response:
    """Prometheus metrics: this web process's own, then the deployment's job metrics."""
    return Response(generate_latest() + generate_latest(CLUSTER), media_type=CONTENT_TYPE_LATEST)
