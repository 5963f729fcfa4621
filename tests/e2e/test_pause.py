"""``jobs/pause`` and ``jobs/resume`` through the real web process, beside the real worker and
stream server: a job queued while its project is paused is held by the worker (its event says
``info.paused: true``, status ``queued``) and the web's resume sends its message again, so
the worker runs it to ``done``; a job paused in the middle stops after its batch (a
websocket subscriber sees ``info.paused: true``, status ``processing``) and finishes every
item once after the resume; the ops API pauses and resumes every project's jobs; a paused job
cancelled over HTTP ends ``rejected``.  (The reaper's part is pinned with real workers in
``tests/worker/test_pause.py``.)

"It stops" is checked by polling the job for a moment, never against a duration."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from sqlalchemy import bindparam, func, select, text

from models import Job, WorkflowEntry
from models.engine import get_engine
from models.seed import SeedResult
from tests.e2e.conftest import System
from tests.e2e.helpers import Api, Subscriber, assert_lifecycle, job_events, terminal_of

pytestmark = pytest.mark.e2e


def flags(events: list[dict[str, Any]], token: str) -> list[tuple[str, bool]]:
    return [(e["data"]["status"], e["data"]["info"]["paused"]) for e in events
            if e["data_key"] == token and "paused" in e["data"]["info"]]


def test_a_job_queued_while_paused_waits_for_the_resume_over_http(
    system: System, seeded: SeedResult,
) -> None:
    """Pause over HTTP (the project owner's API key), queue a delete: the worker holds it,
    ``jobs/get`` shows it queued and paused; resume over HTTP answers its token and the
    worker finishes it ``done``, its events saying paused, then resumed."""
    project = seeded.projects[0]
    api = Api(system.web_url, project.gid)
    assert api.auth(project.api_key)["success"]
    cursor = api.cc_cursor()
    paused = api.call("jobs/pause")
    assert paused["_status"] == 200 and paused["result"] == {"paused": True}, paused
    token = api.queue("records/bulk/delete", project.heads[:2])
    deadline = time.monotonic() + 60
    while not flags(api.events_since(cursor), token):
        assert time.monotonic() < deadline, "the worker did not hold the job"
        time.sleep(0.1)
    job = api.call("jobs/get", {"job": token})["result"]["job"]
    assert (job["status"], job["info"]) == ("queued", {"paused": True})

    resumed = api.call("jobs/resume")
    assert resumed["_status"] == 200, resumed
    assert resumed["result"] == {"paused": False, "resumed": [token]}
    while (job := api.call("jobs/get", {"job": token})["result"]["job"])["status"] not in (
            "done", "rejected"):
        assert time.monotonic() < deadline + 60, "the job did not finish after resume"
        time.sleep(0.1)
    assert job["status"] == "done" and job["info"]["failed"] == 0
    assert "paused" not in job["info"]
    assert flags(api.events_since(cursor), token) == [("queued", True), ("queued", False)]


#: Items of the jobs paused in the middle: one batch each (``BATCH_SIZE`` 1), so that a
#: pause finds them with many batches to go.
ITEMS = 120


def leaves(project_gid: str) -> list[str]:
    """The first :data:`ITEMS` live records at the bottom of the project's tree (deleting each
    is independent of the others)."""
    with get_engine().connect() as conn:
        return list(conn.execute(text(
            "SELECT r.gid FROM record r WHERE r.project_gid = :p AND r.treelevel = 3 "
            "AND NOT EXISTS (SELECT 1 FROM record_deletion d WHERE d.record_id = r.id) "
            "ORDER BY r.id LIMIT :n"), {"p": project_gid, "n": ITEMS}).scalars())


def job_row(token: str) -> Any:
    with get_engine().connect() as conn:
        return conn.execute(select(Job.__table__).where(Job.__table__.c.token == token)).one()


def deleted(gids: list[str]) -> int:
    with get_engine().connect() as conn:
        return int(conn.execute(text(
            "SELECT COUNT(*) FROM record r JOIN record_deletion d ON d.record_id = r.id "
            "WHERE r.gid IN :gids").bindparams(bindparam("gids", expanding=True)),
            {"gids": gids}).scalar_one())


def entries_per_record(token: str) -> list[int]:
    """How many workflow entries the job wrote on each record it wrote any on."""
    w = WorkflowEntry.__table__.c
    with get_engine().connect() as conn:
        return list(conn.execute(select(func.count()).where(w.job_token == token)
                                 .group_by(w.record_id)).scalars())


def progressed(token: str, done: int) -> Callable[[list[dict[str, Any]]], bool]:
    """Predicate: the job's events say it has processed at least ``done`` items."""
    return lambda events: any(
        e["data"]["status"] == "processing"
        and e["data"]["info"]["total"] - e["data"]["info"]["remaining"] >= done
        for e in job_events(events, token))


def said_paused(token: str) -> Callable[[list[dict[str, Any]]], bool]:
    return lambda events: any(e["data"]["info"].get("paused") is True
                              for e in job_events(events, token))


def still(token: str, rounds: int = 20) -> Any:
    """Poll the job for a moment: it must stay where it stopped (same status and ``info``,
    no owner).  Returns the row."""
    first = job_row(token)
    for _ in range(rounds):
        time.sleep(0.1)
        row = job_row(token)
        assert (row.status, row.owner, row.info) == (first.status, None, first.info), row
    return first


def test_a_running_job_paused_over_http_stops_after_its_batch_and_finishes_after_resume(
    system: System, seeded: SeedResult,
) -> None:
    """``jobs/pause`` while the worker runs a job of many batches: the websocket subscriber
    gets the job's event with ``info.paused: true``, status ``processing``; the job then stays
    where it stopped, short of done; ``jobs/resume`` answers its token and the job ends
    ``done`` with every item processed once."""
    project = seeded.projects[0]
    api = Api(system.web_url, project.gid)
    assert api.auth(project.api_key)["success"]
    targets = leaves(project.gid)

    async def scenario() -> tuple[str, Any, dict[str, Any], list[dict[str, Any]]]:
        async with Subscriber(system.stream_url, api.jwt) as sub:
            await sub.subscribe(project.gid, cc_cursor=api.cc_cursor())
            token = api.queue("records/bulk/delete", targets)
            await sub.until(progressed(token, 3))
            paused = api.call("jobs/pause")
            assert paused["_status"] == 200 and paused["result"] == {"paused": True}, paused
            await sub.until(said_paused(token))
            row = still(token)
            resumed = api.call("jobs/resume")
            await sub.until(terminal_of(token))
            return token, row, resumed, job_events(sub.events, token)

    with system.own_worker("pausee", BATCH_SIZE="1"):
        token, row, resumed, events = asyncio.run(scenario())
    [at_pause] = [e["data"] for e in events if e["data"]["info"].get("paused") is True]
    assert at_pause["status"] == "processing"
    assert (row.status, row.info["paused"]) == ("processing", True)
    assert row.info["remaining"] == at_pause["info"]["remaining"]
    assert 0 < row.info["remaining"] < len(targets)
    assert resumed["_status"] == 200, resumed
    assert resumed["result"] == {"paused": False, "resumed": [token]}
    assert [(e["data"]["status"], e["data"]["info"]["paused"]) for e in events
            if "paused" in e["data"]["info"]] == [("processing", True), ("processing", False)]
    assert_lifecycle(events, token, len(targets))
    done = job_row(token)
    assert done.status == "done"
    assert done.info == {"total": len(targets), "remaining": 0, "failed": 0, "errors": []}
    assert deleted(targets) == len(targets)
    assert entries_per_record(token) == [1] * len(targets)


def ops_jwt(system: System, seeded: SeedResult) -> str:
    [ops] = [u for u in seeded.users if u.ops]
    r = httpx.post(f"{system.web_url}/api/login",
                   json={"username": ops.username, "password": ops.password})
    assert r.status_code == 200, r.text
    return str(r.headers["authorization"])


def ops_call(system: System, jwt: str, what: str) -> httpx.Response:
    return httpx.post(f"{system.web_url}/ops/api/jobs/{what}",
                      headers={"Authorization": f"Bearer {jwt}"}, timeout=30)


def test_the_ops_pause_holds_every_projects_jobs_until_the_ops_resume(
    system: System, seeded: SeedResult,
) -> None:
    """``/ops/api/jobs/pause`` with an ops user's JWT (403 with a project owner's): a running
    job of one project stops after its batch, a job queued in another project waits; the
    ops resume answers both tokens and both end ``done``."""
    first, second = seeded.projects
    api, other = Api(system.web_url, first.gid), Api(system.web_url, second.gid)
    assert api.auth(first.api_key)["success"] and other.auth(second.api_key)["success"]
    jwt = ops_jwt(system, seeded)
    refused = ops_call(system, api.jwt, "pause")
    assert refused.status_code == 403, refused.text
    targets = leaves(first.gid)

    async def scenario() -> tuple[str, str, Any, Any, httpx.Response, list[dict[str, Any]]]:
        async with Subscriber(system.stream_url, jwt) as sub:
            await sub.subscribe("*", cc_cursor=api.cc_cursor())
            running = api.queue("records/bulk/delete", targets)
            await sub.until(progressed(running, 3))
            paused = ops_call(system, jwt, "pause")
            assert paused.status_code == 200, paused.text
            assert paused.json() == {"paused": True, "resumed": []}
            queued = other.queue("records/bulk/delete", second.heads[:2])
            await sub.until(lambda ev: said_paused(running)(ev) and said_paused(queued)(ev))
            held_running, held_queued = still(running), still(queued)
            resumed = ops_call(system, jwt, "resume")
            await sub.until(lambda ev: terminal_of(running)(ev) and terminal_of(queued)(ev))
            return running, queued, held_running, held_queued, resumed, sub.events

    with system.own_worker("ops-pausee", BATCH_SIZE="1"):
        running, queued, held_running, held_queued, resumed, events = asyncio.run(scenario())
    assert (held_running.status, held_running.info["paused"]) == ("processing", True)
    assert 0 < held_running.info["remaining"] < len(targets)
    assert (held_queued.status, held_queued.info) == ("queued", {"paused": True})
    assert resumed.status_code == 200, resumed.text
    assert resumed.json()["paused"] is False
    assert sorted(resumed.json()["resumed"]) == sorted([running, queued])
    for token in (running, queued):
        row = job_row(token)
        assert row.status == "done" and row.info["failed"] == 0, row
        assert "paused" not in row.info
    assert_lifecycle(job_events(events, running), running, len(targets))
    assert deleted(targets) == len(targets)


def test_a_paused_job_cancelled_over_http_ends_rejected_at_once(
    system: System, seeded: SeedResult,
) -> None:
    """``jobs/cancel`` on a job paused in the middle: it ends ``rejected`` with
    ``info.cancelled: true`` and ``info.error`` "cancelled" while still paused, with no item
    processed after the pause; the resume then has nothing to send."""
    project = seeded.projects[0]
    api = Api(system.web_url, project.gid)
    assert api.auth(project.api_key)["success"]
    targets = leaves(project.gid)

    async def scenario() -> tuple[str, Any, dict[str, Any], list[dict[str, Any]]]:
        async with Subscriber(system.stream_url, api.jwt) as sub:
            await sub.subscribe(project.gid, cc_cursor=api.cc_cursor())
            token = api.queue("records/bulk/delete", targets)
            await sub.until(progressed(token, 3))
            assert api.call("jobs/pause")["_status"] == 200
            await sub.until(said_paused(token))
            row = still(token)
            cancelled = api.call("jobs/cancel", {"job": token})
            await sub.until(terminal_of(token))
            return token, row, cancelled, job_events(sub.events, token)

    with system.own_worker("cancellee", BATCH_SIZE="1"):
        token, row, cancelled, events = asyncio.run(scenario())
        resumed = api.call("jobs/resume")
    assert cancelled["_status"] == 200 and cancelled["success"], cancelled
    last = events[-1]["data"]
    assert last["status"] == "rejected"
    assert last["info"]["cancelled"] is True and last["info"]["error"] == "cancelled"
    assert [e["data"]["status"] for e in events].count("rejected") == 1
    ended = job_row(token)
    assert ended.status == "rejected" and ended.info["cancelled"] is True
    processed = row.info["total"] - row.info["remaining"]
    assert ended.info["total"] - ended.info["remaining"] == processed
    assert deleted(targets) == processed
    assert resumed["result"] == {"paused": False, "resumed": []}
