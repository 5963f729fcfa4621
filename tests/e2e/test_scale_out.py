"""Scale-out: N jobs queued at once across 10 projects, run by two Celery workers, watched by
M websocket subscribers spread over two stream servers, behind one web process — every
process started from the Procfile's own command (:mod:`tests.e2e.procfile`).

What must hold (SPEC §6–§8, §11 "1,000 jobs queued at once"):

* every job ends ``done``, with the expected ``total``, nothing failed, nothing lost;
* every subscriber receives the terminal event of every job of the projects it may see and
  subscribed to, and no event of any other project; no event twice on one connection;
* the database ends in exactly the expected state: the selected records deleted (and only
  they), the undeleted subtrees restored, every other record row unchanged, one workflow
  entry per processed item, no job items left.

Sizes: ``SCALE_JOBS`` (default 200) jobs and ``SCALE_SUBSCRIBERS`` (default 20) subscribers.
The full size is a documented command (see BENCHMARKS.md, "Scale-out (1,000 jobs)")::

    SCALE_JOBS=1000 SCALE_SUBSCRIBERS=100 \\
    TEST_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/bulkjobs_load \\
    .venv/bin/pytest tests/e2e/test_scale_out.py -s

It runs on SQLite too (the session's default database), where every writer shares one file.
The run prints one ``scale-out:`` JSON line (wall time, jobs/s); nothing here asserts a time.
No ``beat`` runs: the reaper would paper over a lost job, and this run must lose none.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, func, select, text
from sqlmodel import Session

from bulkjobs import tokens
from models import Job, JobItem, Record, RecordVersion, WorkflowEntry
from models.accounts import add_member, create_user
from models.engine import get_engine, get_write_engine
from models.seed import SeedResult, seed
from stream.client import StreamClient
from tests.e2e import procfile
from tests.e2e.conftest import LOGS, Proc, free_port
from tests.worker.helpers import public_records

pytestmark = pytest.mark.e2e

PROJECTS = 10
JOBS = int(os.environ.get("SCALE_JOBS", "200"))
SUBSCRIBERS = int(os.environ.get("SCALE_SUBSCRIBERS", "20"))
WORKERS = 2
STREAMS = 2
#: Requests in flight at once while queueing.
QUEUE_CONCURRENCY = 32


@dataclass
class Cluster:
    web: str
    streams: list[str]
    procs: list[Proc]


@dataclass
class World:
    """The seeded projects and who may see what."""

    seeded: SeedResult
    owner: str  # gid of the owner of every project
    members: dict[int, str]  # project index -> a user who is a member of that project only
    pairs: dict[int, str]  # project index -> a member of that project and the next one


@dataclass
class Plan:
    """One job to queue: where, what, and what it must do."""

    project: int
    endpoint: str
    selection: list[Any]
    total: int
    deletes: list[str] = field(default_factory=list)  # gids it soft-deletes
    undeletes: list[str] = field(default_factory=list)  # heads whose subtrees it restores
    token: str = ""


@dataclass
class Watcher:
    """One subscriber: its connection, what it subscribed to, and what it received."""

    name: str
    url: str
    jwt: str
    subscription: str  # a project gid or "*"
    projects: set[str]  # what it may see and subscribed to
    events: list[dict[str, Any]] = field(default_factory=list)
    notices: list[dict[str, Any]] = field(default_factory=list)
    client: StreamClient | None = None

    def terminal(self) -> set[str]:
        return {e["data_key"] for e in self.events
                if e.get("data_type") == "jobs" and e["data"]["status"] in ("done", "rejected")}


# -- set-up -------------------------------------------------------------------------------


def records_per_project() -> int:
    """Enough live leaves for every project's share of the jobs (see :func:`plan_jobs`)."""
    per_project = math.ceil(JOBS / PROJECTS)
    heads = max(10, math.ceil(per_project * 0.8 / 9) + 3)
    return 1 + 100 * heads


@pytest.fixture
def world(services: Engine) -> World:
    """10 seeded projects, plus users who see one project only, or two."""
    with get_write_engine().begin() as conn:
        seeded = seed(conn, records=records_per_project(), projects=PROJECTS, seed_value=11)
    members: dict[int, str] = {}
    pairs: dict[int, str] = {}
    with Session(get_engine(), expire_on_commit=False) as session:
        for i, project in enumerate(seeded.projects):
            one = create_user(session, username=f"scale-one-{i}", password=uuid.uuid4().hex)
            add_member(session, user=one, project_gid=project.gid)
            two = create_user(session, username=f"scale-two-{i}", password=uuid.uuid4().hex)
            add_member(session, user=two, project_gid=project.gid)
            add_member(session, user=two,
                       project_gid=seeded.projects[(i + 1) % PROJECTS].gid)
            members[i], pairs[i] = one.gid, two.gid
    return World(seeded, seeded.users[0].gid, members, pairs)


@pytest.fixture
def cluster(world: World) -> Iterator[Cluster]:
    """One web process, two workers, two stream servers, from the Procfile's commands."""
    procs: list[Proc] = []
    try:
        web_port = free_port()
        stream_ports = [free_port() for _ in range(STREAMS)]
        procs.append(procfile.web(web_port, STREAM_PORT=str(stream_ports[0])))
        for n in range(WORKERS):
            procs.append(procfile.worker(f"scale-{n}-{uuid.uuid4().hex[:6]}", concurrency=2))
        for port in stream_ports:
            procs.append(procfile.stream(port))
        yield Cluster(f"http://127.0.0.1:{web_port}",
                      [f"ws://127.0.0.1:{p}/sync" for p in stream_ports], procs)
    finally:
        procfile.stop_all(procs)


def tree(project: str) -> dict[str, Any]:
    """The project's records: gid -> row (public state, see :func:`public_records`)."""
    with get_engine().connect() as conn:
        rows = conn.execute(public_records().where(Record.project_gid == project))
        return {r.gid: r for r in rows}


def plan_jobs(world: World) -> list[Plan]:
    """``JOBS`` jobs over disjoint parts of the 10 trees, round robin over the projects:
    per project first an undelete of the subtree the seed deleted, then in turn a
    ``children`` entry (10 leaves), a ``search`` entry (the same kind of 10 leaves, found by
    a ``parent`` filter) and three plain leaf gids."""
    plans: list[Plan] = []
    per_project: list[list[Plan]] = []
    for i, project in enumerate(world.seeded.projects):
        recs = tree(project.gid)
        by_id = {r.id: r for r in recs.values()}
        root = recs[project.root]
        heads = sorted((r for r in recs.values() if r.parent_id == root.id and not r.is_link),
                       key=lambda r: r.id)
        deleted = [h for h in heads if h.status == "deleted"]
        children = [c for c in sorted(recs.values(), key=lambda r: r.id)
                    if c.treelevel == 2 and c.status != "deleted"
                    and by_id[c.parent_id].status != "deleted" and not c.is_link]
        leaves = {c.gid: sorted((r.gid for r in recs.values() if r.parent_id == c.id),
                                key=lambda g: recs[g].id) for c in children}
        mine: list[Plan] = [Plan(i, "records/bulk/undelete", [h.gid], 1, undeletes=[h.gid])
                            for h in deleted[:1]]
        spare: list[str] = []
        turn = 0
        while len(mine) < math.ceil(JOBS / PROJECTS):
            kind = turn % 3
            turn += 1
            if kind == 2:
                if len(spare) < 3:
                    if not children:
                        raise AssertionError("seed more records: no leaves left")
                    spare += leaves[children.pop(0).gid]
                gids, spare = spare[:3], spare[3:]
                mine.append(Plan(i, "records/bulk/delete", gids, 3, deletes=gids))
                continue
            if not children:
                raise AssertionError("seed more records: no children left")
            child = children.pop(0)
            selection: list[Any] = (
                [{"children": child.gid}] if kind == 0 else
                [{"search": {"language": "en", "filter": ["parent", "is", child.gid]}}]
            )
            mine.append(Plan(i, "records/bulk/delete", selection, len(leaves[child.gid]),
                             deletes=leaves[child.gid]))
        per_project.append(mine)
    for n in range(JOBS):  # round robin, so that every project has jobs in flight at once
        plans.append(per_project[n % PROJECTS][n // PROJECTS])
    return plans


def watchers(world: World, cluster: Cluster) -> list[Watcher]:
    """``SUBSCRIBERS`` subscribers alternating over the stream servers, in four kinds: the
    owner on one project, a one-project member on "*", a two-project member on "*", and
    the owner on "*" (every project)."""
    gids = [p.gid for p in world.seeded.projects]
    out: list[Watcher] = []
    for k in range(SUBSCRIBERS):
        i, kind = (k // 4) % PROJECTS, k % 4
        if kind == 0:
            user, sub, sees = world.owner, gids[i], {gids[i]}
        elif kind == 1:
            user, sub, sees = world.members[i], "*", {gids[i]}
        elif kind == 2:
            user, sub, sees = world.pairs[i], "*", {gids[i], gids[(i + 1) % PROJECTS]}
        else:
            user, sub, sees = world.owner, "*", set(gids)
        out.append(Watcher(f"sub-{k}-kind{kind}", cluster.streams[k % STREAMS],
                           tokens.issue(user), sub, sees))
    return out


# -- the run ------------------------------------------------------------------------------


async def queue_all(cluster: Cluster, world: World, plans: list[Plan]) -> None:
    """Queue every plan at once (``QUEUE_CONCURRENCY`` requests in flight), each with the JWT
    of a member of its project only; waits out a 429 as a client would."""
    limit = asyncio.Semaphore(QUEUE_CONCURRENCY)
    jwts = {i: tokens.issue(uid) for i, uid in world.members.items()}
    async with httpx.AsyncClient(base_url=cluster.web, timeout=120) as http:
        async def one(plan: Plan) -> None:
            project = world.seeded.projects[plan.project].gid
            async with limit:
                for _ in range(20):
                    r = await http.post(f"/api/p/{project}/{plan.endpoint}",
                                        json={"selection": plan.selection},
                                        headers={"Authorization": f"Bearer {jwts[plan.project]}"})
                    if r.status_code != 429:
                        break
                    await asyncio.sleep(float(r.headers.get("x-ratelimit-reset", "1")))
            assert r.status_code == 200, r.text
            plan.token = r.json()["result"]["job.token"]
        await asyncio.gather(*(one(p) for p in plans))


async def watch(w: Watcher, ready: asyncio.Event) -> None:
    """Subscribe, then collect events (and notices) until cancelled."""
    async with StreamClient(w.url, w.jwt) as client:
        w.client = client
        reply = await client.subscribe(w.subscription)
        assert reply["op"] == "subscribed", reply
        ready.set()
        async for item in client.events():
            (w.notices if "op" in item else w.events).append(item)


async def scenario(cluster: Cluster, world: World, plans: list[Plan],
                   subs: list[Watcher]) -> dict[str, Any]:
    readies = [asyncio.Event() for _ in subs]
    tasks = [asyncio.create_task(watch(w, r)) for w, r in zip(subs, readies, strict=True)]
    try:
        async with asyncio.timeout(60):
            await asyncio.gather(*(r.wait() for r in readies))
        started = time.monotonic()
        await queue_all(cluster, world, plans)
        queued = time.monotonic()
        by_project: dict[str, set[str]] = defaultdict(set)
        for plan in plans:
            by_project[world.seeded.projects[plan.project].gid].add(plan.token)
        expected = {w.name: set().union(*(by_project[p] for p in w.projects)) for w in subs}
        deadline = time.monotonic() + max(300.0, JOBS * 1.0)
        while time.monotonic() < deadline:
            for task in tasks:  # a watcher that died is a failure, not a hang
                if task.done():
                    task.result()
            if all(expected[w.name] <= w.terminal() for w in subs):
                break
            await asyncio.sleep(0.2)
        finished = time.monotonic()
        return {"expected": expected, "wall": finished - started, "queueing": queued - started}
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def project_of(event: dict[str, Any]) -> str:
    """The project an event belongs to: a job event's ``project_gid``, or the space of a
    record event (a project's own space is named by its gid)."""
    return str(event["data"]["project_gid"] if event["type"] == "cc" else event["type"])


def snapshot() -> dict[str, Any]:
    """Every record row, and counts of versions and workflow entries by action."""
    with get_engine().connect() as conn:
        rows = {r.gid: r._asdict() for r in conn.execute(public_records())}
        versions = conn.execute(select(func.count()).select_from(RecordVersion)).scalar_one()
        workflow = dict(conn.execute(select(WorkflowEntry.action, func.count())
                                     .group_by(WorkflowEntry.action)).all())
    return {"records": rows, "versions": versions, "workflow": workflow}


def test_scale_out_every_job_done_every_subscriber_sees_its_projects_only(
        world: World, cluster: Cluster):
    """N jobs across 10 projects on 2 workers and 2 stream servers: all done, each subscriber
    gets every terminal event of its projects and nothing of others, the database exact."""
    plans = plan_jobs(world)
    subs = watchers(world, cluster)
    before = snapshot()

    result = asyncio.run(scenario(cluster, world, plans, subs))

    # -- the subscribers ------------------------------------------------------------------
    for w in subs:
        missing = result["expected"][w.name] - w.terminal()
        assert not missing, f"{w.name} missed {len(missing)} terminal event(s)"
        foreign = [e for e in w.events if project_of(e) not in w.projects]
        assert not foreign, f"{w.name} got events of other projects: {foreign[:3]}"
        cursors = [(e["type"], e["cursor"]) for e in w.events]
        assert len(cursors) == len(set(cursors)), f"{w.name} got an event twice"
        lost = [n for n in w.notices if n.get("op") == "subscribed" and not n["recovered"]]
        assert not lost, f"{w.name} lost events for good: {lost}"
        assert w.terminal() <= result["expected"][w.name]

    # -- the jobs -------------------------------------------------------------------------
    # A run marks its job announced with its process's next claim, or 0.2 s after the
    # terminal event when none follows (worker/announced.py): a liveness wait, not a bound.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with get_engine().connect() as conn:
            if not conn.execute(select(func.count()).select_from(Job).where(
                    Job.status == "done", Job.announced.is_(False))).scalar_one():
                break
        time.sleep(0.1)
    with Session(get_engine()) as session:
        jobs = {j.token: j for j in session.execute(select(Job)).scalars()}
        items_left = session.execute(select(func.count()).select_from(JobItem)).scalar_one()
    assert len(jobs) == JOBS and items_left == 0
    for plan in plans:
        job = jobs[plan.token]
        assert job.status == "done", (plan, job.status, job.info)
        assert job.project_gid == world.seeded.projects[plan.project].gid
        assert job.info["total"] == plan.total and job.info["remaining"] == 0, job.info
        assert job.info["failed"] == 0 and "error" not in job.info, job.info
        assert job.announced

    # -- the database ---------------------------------------------------------------------
    after = snapshot()
    deleted = {g for p in plans for g in p.deletes}
    restored_heads = {g for p in plans for g in p.undeletes}
    head_ids = {before["records"][g]["id"] for g in restored_heads}
    restored = {g for g, r in before["records"].items() if r["deleted_root"] in head_ids}
    assert after["records"].keys() == before["records"].keys()

    def content(row: dict[str, Any]) -> dict[str, Any]:
        # the row without its deletion state: deleting and undeleting leave the rest alone
        return {k: v for k, v in row.items() if k not in ("status", "deleted_root")}

    for gid, row in after["records"].items():
        old = before["records"][gid]
        if gid in deleted or gid in restored:
            assert content(row) == content(old), row
        if gid in deleted:
            assert row["status"] == "deleted" and row["deleted_root"] == row["id"], row
            assert row["own_status"] == old["status"]
        elif gid in restored:
            assert row["status"] == old["own_status"], row
            assert row["deleted_root"] is None, row
        else:
            assert row == old, f"record {gid} changed though no job selected it"
    assert after["versions"] == before["versions"]
    workflow = {a: after["workflow"].get(a, 0) - before["workflow"].get(a, 0)
                for a in set(after["workflow"]) | set(before["workflow"])}
    assert workflow == {**{a: 0 for a in workflow}, "delete": len(deleted),
                        "undelete": len(restored_heads)}

    # -- the figures ----------------------------------------------------------------------
    with get_engine().connect() as conn:
        db = conn.execute(text("SELECT 1")).dialect.name
    figures = {
        "database": db, "jobs": JOBS, "subscribers": SUBSCRIBERS, "projects": PROJECTS,
        "workers": WORKERS, "streams": STREAMS, "items": sum(p.total for p in plans),
        "wall_s": round(result["wall"], 2), "queueing_s": round(result["queueing"], 2),
        "jobs_per_s": round(JOBS / result["wall"], 1),
        "events_received": sum(len(w.events) for w in subs),
        "reconnects": sum(w.client.reconnects for w in subs if w.client is not None),
    }
    LOGS.mkdir(parents=True, exist_ok=True)
    (LOGS / "scale-out.json").write_text(json.dumps(figures))
    print("scale-out:", json.dumps(figures))
