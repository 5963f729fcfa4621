"""Idempotent submits across processes: concurrent identical requests under one
``Idempotency-Key``, sent to two real web processes started from the Procfile's command,
queue exactly one job; every other request answers that job's token or 409.

A 409 is made to happen for certain: the first request's web process reaches Redis through
a proxy (:class:`PingGate`) that holds the ``PING`` with which queueing checks Redis between
reserving the key and writing the job row (:func:`worker.submit.submit_each`).  While it is
held the key is reserved with no job, as for a request still being handled, and the other
web process answers 409 to the same request; once the proxy lets it through, the first
request queues the job, the real worker runs it to ``done`` and every later request answers
that job.  The hold lasts one query and one request: it stays far within the web process's
Redis reply timeout (``bulkjobs.connections.SOCKET_TIMEOUT``)."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, select

from models import IdempotencyKey, Job
from models.engine import get_engine
from models.seed import SeededProject, SeedResult
from tests.api.dialects import bearer, history_record, versions_of
from tests.e2e import procfile
from tests.e2e.conftest import Proc, System, free_port, wait_for
from tests.e2e.helpers import Api, Subscriber, terminal_of
from tests.worker.proxy import RedisProxy

pytestmark = pytest.mark.e2e

#: Requests sent at once, spread over the web processes.
REQUESTS = 24


@pytest.fixture
def webs(schema: Engine) -> Iterator[list[str]]:
    """Two web processes on the test database (no worker: the job stays queued)."""
    ports = [free_port(), free_port()]
    procs: list[Proc] = []
    try:
        for port in ports:
            procs.append(procfile.web(port))
        yield [f"http://127.0.0.1:{port}" for port in ports]
    finally:
        procfile.stop_all(procs)


async def burst(webs: list[str], project: SeededProject, path: str, body: dict[str, Any]
                ) -> list[httpx.Response]:
    async with httpx.AsyncClient(timeout=60) as client:
        auth = await client.post(f"{webs[0]}/api/p/{project.gid}/auth",
                                 json={"api_key": project.api_key})
        # Connections opened beforehand, so that the requests arrive together.
        await asyncio.gather(*(client.get(f"{webs[i % len(webs)]}/livez")
                               for i in range(REQUESTS)))
        jwt = auth.headers["authorization"]
        headers = {"Authorization": f"Bearer {jwt}", "Idempotency-Key": "burst-1"}
        return await asyncio.gather(*(
            client.post(f"{webs[i % len(webs)]}/api/p/{project.gid}/{path}", json=body,
                        headers=headers)
            for i in range(REQUESTS)))


ROUTES = {
    # queued in batches by each process's queueing thread (api.queueing.queue_for)
    "records/bulk/delete": lambda p: {"selection": [{"children": p.root}]},
    # queued by the request's own thread (api.queueing.queue_job)
    "schema/bulk/commit": lambda p: {"selection": []},
}


@pytest.mark.parametrize("path", list(ROUTES))
def test_concurrent_identical_requests_queue_one_job(webs: list[str], seeded: SeedResult,
                                                     path: str) -> None:
    """Identical requests under one key, at once, over two web processes: one job row;
    each answer is that job's token (200) or 409 in the Unicat envelope."""
    project = seeded.projects[0]
    answers = asyncio.run(burst(webs, project, path, ROUTES[path](project)))
    with get_engine().connect() as conn:
        jobs = list(conn.execute(select(Job.__table__.c.token).where(
            Job.__table__.c.project_gid == project.gid)).scalars())
        [key] = list(conn.execute(select(IdempotencyKey.__table__)))
    assert len(jobs) == 1 and key.job_token == jobs[0]
    for r in answers:
        if r.status_code == 200:
            assert r.json()["result"]["job.token"] == jobs[0], r.text
        else:
            assert r.status_code == 409, r.text
            assert r.json()["success"] is False and r.json()["result"]["code"] == 409
    assert any(r.status_code == 200 for r in answers)


# -- a request held in flight ------------------------------------------------------------------


class PingGate(RedisProxy):
    """The test Redis behind a proxy that, while closed, holds each ``PING`` its clients send
    (with whatever came in the same read) until it is opened; everything else goes through."""

    def __init__(self, url: str) -> None:
        self.opened = threading.Event()
        self.opened.set()
        self.holding = threading.Event()  # a PING is being held
        super().__init__(url)

    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/{self.db}"

    def close(self) -> None:
        self.opened.clear()

    def open(self) -> None:
        self.opened.set()

    def passing(self, data: bytes) -> None:
        if b"\r\nPING\r\n" in data and not self.opened.is_set():
            self.holding.set()
            self.opened.wait()


@dataclass
class Held:
    """A web process whose Redis is behind a :class:`PingGate`."""

    url: str
    gate: PingGate


@pytest.fixture
def held_web(system: System) -> Iterator[Held]:
    """A second web process, its Redis (``REDIS_URL``; the broker is reached directly) behind
    a :class:`PingGate`; fresh for each test, so that no idle connection's health check sends
    a ``PING`` of its own."""
    gate = PingGate(os.environ["REDIS_URL"])
    port = free_port()
    proc = procfile.web(port, REDIS_URL=gate.url())
    try:
        yield Held(f"http://127.0.0.1:{port}", gate)
    finally:
        gate.open()
        procfile.stop_all([proc])
        gate.down()


@dataclass(frozen=True)
class Target:
    project: SeededProject
    jwt: str
    record: str  # a record with versions
    version_id: str  # its first version's id (DatoCMS)


@dataclass(frozen=True)
class Route:
    """A job-queueing route of one dialect as a client calls it under an Idempotency-Key:
    the status of its success, what in a success names the job (its token, unless
    ``by_token`` is false) and whether an answer is the dialect's 409."""

    send: Callable[[httpx.AsyncClient, str, Target, dict[str, str]],
                   Coroutine[Any, Any, httpx.Response]]
    ok: int
    job: Callable[[httpx.Response], Any]
    conflict: Callable[[httpx.Response], bool]
    by_token: bool = True


def _unicat_conflict(r: httpx.Response) -> bool:
    body = r.json()
    return body["success"] is False and body["result"]["code"] == 409


def _dato_conflict(r: httpx.Response) -> bool:
    [error] = r.json()["data"]
    return bool(error["type"] == "api_error"
                and error["attributes"]["code"] == "INVALID_REQUEST")


def _plone_conflict(r: httpx.Response) -> bool:
    body = r.json()
    return set(body) == {"type", "message"} and body["type"] == "Conflict"


HELD_ROUTES = {
    "unicat-delete": Route(
        lambda c, base, t, h: c.post(
            f"{base}/api/p/{t.project.gid}/records/bulk/delete",
            json={"selection": [t.project.heads[0]]},
            headers={**h, "Authorization": f"Bearer {t.jwt}"}),
        200, lambda r: r.json()["result"]["job.token"], _unicat_conflict),
    "dato-restore": Route(
        lambda c, base, t, h: c.post(
            f"{base}/dato/p/{t.project.gid}/versions/{t.version_id}/restore",
            headers={**h, **bearer(t.project.api_key)}),
        202, lambda r: r.json()["data"]["id"], _dato_conflict),
    # The revert waits for its job: its success says the record was reverted.
    "plone-revert": Route(
        lambda c, base, t, h: c.patch(
            f"{base}/plone/p/{t.project.gid}/{t.record}/@history", json={"version": 1},
            headers={**h, **bearer(t.project.api_key)}),
        200, lambda r: r.json()["message"], _plone_conflict, by_token=False),
}


def jobs_and_keys(project_gid: str) -> tuple[list[str], list[Any]]:
    with get_engine().connect() as conn:
        jobs = list(conn.execute(select(Job.__table__.c.token).where(
            Job.__table__.c.project_gid == project_gid)).scalars())
        return jobs, list(conn.execute(select(IdempotencyKey.__table__)))


async def held_burst(route: Route, held: Held, other: str, target: Target
                     ) -> tuple[httpx.Response, list[httpx.Response], list[httpx.Response]]:
    """The first request to ``held``'s web process, held after it reserved the key; then
    :data:`REQUESTS` more at once, half to each web process.  The gate opens on the first
    answer from ``other``.  Returns the first request's answer, the answers given while it
    was held, and the rest."""
    headers = {"Idempotency-Key": "in-flight-1"}
    async with httpx.AsyncClient(timeout=120) as client:
        # Connections opened beforehand, so that the requests arrive together.
        await asyncio.gather(*(client.get(f"{base}/livez") for base in (held.url, other)
                               for _ in range(REQUESTS // 2)))
        held.gate.close()
        first = asyncio.create_task(route.send(client, held.url, target, headers))
        await asyncio.to_thread(held.gate.holding.wait, 60)
        assert held.gate.holding.is_set(), "the first request sent no PING"
        await asyncio.to_thread(wait_for, lambda: [k.job_token for k in jobs_and_keys(
            target.project.gid)[1]] == [None], "the first request's reservation")
        behind = [asyncio.create_task(route.send(client, held.url, target, headers))
                  for _ in range(REQUESTS // 2)]
        beside = [asyncio.create_task(route.send(client, other, target, headers))
                  for _ in range(REQUESTS // 2)]
        done, _ = await asyncio.wait(beside, return_when=asyncio.FIRST_COMPLETED)
        while_held = [task.result() for task in done]
        assert jobs_and_keys(target.project.gid)[0] == []  # still in flight
        held.gate.open()
        rest = await asyncio.gather(*behind, *(t for t in beside if t not in done))
        return await first, while_held, list(rest)


@pytest.mark.parametrize("name", list(HELD_ROUTES))
def test_a_request_in_flight_makes_its_repeats_409_and_its_one_job_runs_to_done(
    system: System, held_web: Held, seeded: SeedResult, name: str,
) -> None:
    """The first of identical requests under one key held between its key's reservation and
    its job: the same request to another web process meanwhile is the dialect's 409; every
    answer is that 409 or the one job's success; the worker runs the job to ``done`` (its
    terminal event on the stream); a retry afterwards answers the same job."""
    route = HELD_ROUTES[name]
    project = seeded.projects[0]
    api = Api(system.web_url, project.gid)
    assert api.auth(project.api_key)["success"]
    rec = history_record(project)
    target = Target(project, api.jwt, rec.gid, str(versions_of(rec.id)[0].id))

    async def scenario() -> tuple[httpx.Response, list[httpx.Response], list[httpx.Response],
                                  str, list[dict[str, Any]]]:
        async with Subscriber(system.stream_url, target.jwt) as sub:
            await sub.subscribe(project.gid, cc_cursor=api.cc_cursor())
            first, while_held, rest = await held_burst(route, held_web, system.web_url, target)
            [token], _ = jobs_and_keys(project.gid)
            await sub.until(terminal_of(token))
            return first, while_held, rest, token, sub.events

    first, while_held, rest, token, events = asyncio.run(scenario())
    assert first.status_code == route.ok, first.text
    assert while_held and all(r.status_code == 409 and route.conflict(r) for r in while_held), \
        [r.text for r in while_held]
    for r in rest:
        if r.status_code == 409:
            assert route.conflict(r), r.text
        else:
            assert r.status_code == route.ok and route.job(r) == route.job(first), r.text
    assert [e["data"]["status"] for e in events if e["data_key"] == token][-1] == "done"
    if route.by_token:
        assert route.job(first) == token
    jobs, keys = jobs_and_keys(project.gid)
    assert jobs == [token] and [k.job_token for k in keys] == [token]

    async def retry() -> httpx.Response:
        async with httpx.AsyncClient(timeout=120) as client:
            return await route.send(client, system.web_url, target,
                                    {"Idempotency-Key": "in-flight-1"})

    again = asyncio.run(retry())
    assert again.status_code == route.ok and route.job(again) == route.job(first), again.text
    assert jobs_and_keys(project.gid)[0] == [token]
    with get_engine().connect() as conn:
        status = conn.execute(select(Job.__table__.c.status).where(
            Job.__table__.c.token == token)).scalar_one()
    assert status == "done"
