"""The ops dashboard and its small API.

* ``GET /ops``: the page (``api/static/ops.html``; script and styles under ``/ops/static/``,
  plain files, no build step, nothing fetched from the internet).  It logs in through
  ``POST /api/login``, follows jobs over the websocket stream and cancels through
  ``jobs/cancel``; it polls only :func:`stats` (queue depth and workers are in no event).
* ``GET /ops/api/config``: ``{"stream_url": …}`` — ``STREAM_PUBLIC_URL`` when set, else
  ``ws://<host>:<STREAM_PORT>/sync`` with the host the browser used (``X-Forwarded-Host`` and
  ``X-Forwarded-Proto`` honoured, so behind a TLS proxy it is ``wss://``).
* ``GET /ops/api/stats`` (JWT): :meth:`models.ops.Stats.as_json` over the projects the
  user may watch — every project for ops users, active memberships for others — and
  ``paused``, the paused scopes among them (``"*"`` while every project's jobs are).
* ``POST /ops/api/jobs/pause`` and ``/ops/api/jobs/resume`` (JWT of an ops user, not an API
  key's): the jobs of every project paused and resumed at once (:mod:`worker.pausing`);
  403 for anyone else.

Successful answers are plain JSON objects; errors (401 without a valid JWT) come in the
Unicat envelope like every other path outside the dialect prefixes.
"""

from __future__ import annotations

import hashlib
import re
from functools import lru_cache
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel

from api.deps import ClaimsDep, SessionDep
from bulkjobs.connections import get_broker_redis, get_redis, get_synclog
from bulkjobs.errors import Forbidden
from bulkjobs.settings import get_settings
from bulkjobs.tokens import Claims
from models import ops
from models.accounts import visible_to
from models.pauses import EVERY_PROJECT, paused_scopes
from worker.app import enqueue_many
from worker.deps import Deps
from worker.pausing import pause_jobs, resume

STATIC = Path(__file__).parent / "static"
#: The page's scripts and styles (every one listed in ``ops.html``), hashed into their URLs.
ASSETS = ("ops.js", "ops-rows.js", "ops-chart.js", "ops-detail.js", "ops-history.js",
          "ops-pause.js", "ops.css")
_HOST = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(:\d+)?$")

router = APIRouter(prefix="/ops", tags=["ops"])

#: OpenAPI: no credentials needed.
PUBLIC: dict[str, Any] = {"security": []}


class StreamConfig(BaseModel):
    stream_url: str


class Workers(BaseModel):
    alive: int
    hostnames: list[str]
    busy: int


class Throughput(BaseModel):
    window: float
    items_per_s: float
    jobs_per_s: float


class Paused(BaseModel):
    """Whether every project's jobs are paused now; ``resumed``: the jobs whose messages
    were sent again (on resume)."""

    paused: bool
    resumed: list[str] = []


class Stats(BaseModel):
    """:meth:`models.ops.Stats.as_json`; ``queue_depth`` is null when the broker is not
    Redis."""

    now: float
    queue_depth: int | None
    workers: Workers
    jobs: dict[str, int]
    throughput: Throughput
    projects: dict[str, str]
    paused: list[str] = []


def static_files() -> StaticFiles:
    """The dashboard's script and styles, to be mounted at ``/ops/static``."""
    return StaticFiles(directory=STATIC)


@lru_cache(maxsize=1)
def _page() -> str:
    # A content hash in the asset URLs: a new version is never served from a stale cache.
    digest = hashlib.sha256()
    for name in ASSETS:
        digest.update((STATIC / name).read_bytes())
    return (STATIC / "ops.html").read_text().replace("{{version}}", digest.hexdigest()[:12])


@router.get("", response_class=HTMLResponse, openapi_extra=PUBLIC)
def page() -> HTMLResponse:
    """The ops dashboard page."""
    return HTMLResponse(_page(), headers={"Cache-Control": "no-cache"})


def stream_url(request: Request) -> str:
    """The websocket URL a browser that reached us through ``request`` should use."""
    settings = get_settings()
    if settings.stream_public_url:
        return settings.stream_public_url
    host = (request.headers.get("x-forwarded-host") or request.headers.get("host") or "")
    host = host.split(",")[0].strip()
    match = _HOST.match(host)
    hostname = match.group(1) if match else "127.0.0.1"
    proto = (request.headers.get("x-forwarded-proto") or request.url.scheme).split(",")[0]
    scheme = "wss" if proto.strip().lower() in ("https", "wss") else "ws"
    return f"{scheme}://{hostname}:{settings.stream_port}/sync"


@router.get("/api/config", response_model=None, responses={200: {"model": StreamConfig}},
            openapi_extra=PUBLIC)
def config(request: Request) -> Any:
    """Where the dashboard finds the websocket stream."""
    return {"stream_url": stream_url(request)}


@router.get("/api/stats", response_model=None, responses={200: {"model": Stats}})
def stats(c: ClaimsDep, session: SessionDep) -> Any:
    """Queue depth, live workers, jobs by status and recent throughput."""
    # Every project for ops (as the user row says now), unless the token is an API key's.
    projects = None if c.ops and c.prj is None else visible_to(session, c)
    settings = get_settings()
    result = ops.collect(
        session.connection(), client=get_redis(), broker=get_broker_redis(), projects=projects,
        heartbeat=settings.worker_heartbeat, stale_after=settings.stale_after,
    )
    answer = result.as_json()
    # Paused scopes among those watched ("*": every project's jobs, by the ops switch).
    scopes = paused_scopes(session.connection())
    answer["paused"] = sorted(s for s in scopes
                              if s == EVERY_PROJECT or projects is None or s in projects)
    return answer


def _ops_only(c: Claims) -> None:
    if not c.ops or c.prj is not None:  # a token made from an API key opens one project
        raise Forbidden("Only ops users may pause every project's jobs")


@router.post("/api/jobs/pause", response_model=None, responses={200: {"model": Paused}})
def pause_all(c: ClaimsDep) -> Any:
    """Pause the jobs of every project (ops only): running jobs stop after their current
    batch with `info.paused` true, queued jobs wait."""
    _ops_only(c)
    pause_jobs(Deps.default(get_synclog(), heartbeat=False), EVERY_PROJECT, by=c.user)
    return {"paused": True, "resumed": []}


@router.post("/api/jobs/resume", response_model=None, responses={200: {"model": Paused}})
def resume_all(c: ClaimsDep) -> Any:
    """Resume the jobs of every project (ops only), except those of projects paused on their
    own."""
    _ops_only(c)
    tokens = resume(Deps.default(get_synclog(), heartbeat=False), EVERY_PROJECT,
                    enqueue=enqueue_many)
    return {"paused": False, "resumed": tokens}
