"""In-process helpers for worker tests: jobs are queued with ``submit`` and run by calling the
runner directly (no Celery), against the real database and Redis."""

from __future__ import annotations

import time
import uuid
from typing import Any

from sqlalchemy import Select, case, insert, select, update

from bulkjobs import keys
from bulkjobs.synclog import SyncLog
from models import Job, Record, RecordDeletion, RecordTombstone, RecordVersion, WorkflowEntry
from models.engine import get_engine, get_write_engine
from models.seed import SeededProject, SeedResult, seed
from worker.deps import Deps, RunConfig
from worker.runner import run
from worker.submit import submit

records_t = Record.__table__
jobs_t = Job.__table__
versions_t = RecordVersion.__table__
workflow_t = WorkflowEntry.__table__
tombstones_t = RecordTombstone.__table__
deletions_t = RecordDeletion.__table__
ACTOR = {"type": "user", "id": "tester"}


#: A record's public status (select from ``record`` outer-joined with ``record_deletion``):
#: ``deleted`` while it has a deletion row, else the row's own ``draft``/``published``.
PUBLIC_STATUS = case((deletions_t.c.record_id.is_not(None), "deleted"),
                     else_=records_t.c.status)


def public_records() -> Select[Any]:
    """Record rows in their public state: ``status`` is :data:`PUBLIC_STATUS`, ``own_status``
    the row's ``draft``/``published`` (what an undelete returns it to), ``deleted_root`` its
    delete generation or ``None``."""
    columns = [c for c in records_t.c if c.name != "status"]
    return (select(*columns, records_t.c.status.label("own_status"),
                   PUBLIC_STATUS.label("status"), deletions_t.c.deleted_root)
            .outerjoin(deletions_t, deletions_t.c.record_id == records_t.c.id))


def records(project_gid: str) -> dict[str, Any]:
    """Every record of a project by gid, in its public state (:func:`public_records`)."""
    with get_engine().connect() as conn:
        rows = conn.execute(public_records().where(records_t.c.project_gid == project_gid))
        return {r.gid: r for r in rows}


def subtree(recs: dict[str, Any], gid: str) -> list[str]:
    top = recs[gid].mpath
    return [g for g, r in recs.items() if r.mpath.startswith(top)]


def children(recs: dict[str, Any], gid: str) -> list[str]:
    pid = recs[gid].id
    return sorted((g for g, r in recs.items() if r.parent_id == pid), key=lambda g: recs[g].id)


def make_link(project: SeededProject, target: str, *, status: str = "published") -> str:
    """A link under the root pointing at ``target`` (the root's childcount counts it)."""
    recs = records(project.gid)
    gid = str(uuid.uuid4())
    root = recs[project.root]
    with get_write_engine().begin() as conn:
        lid = conn.execute(insert(records_t).values(
            gid=gid, project_gid=project.gid, parent_id=root.id,
            canonical_id=recs[target].id, is_link=True, treelevel=1, mpath="", childcount=0,
            title={"en": "link"}, fields={}, status=status, channels=["__all__"],
            orderings={}, created_on=time.time(), updated_on=time.time(),
        ).returning(records_t.c.id)).scalar_one()
        conn.execute(update(records_t).where(records_t.c.id == lid)
                     .values(mpath=f"/{root.id}/{lid}/"))
        conn.execute(update(records_t).where(records_t.c.id == root.id)
                     .values(childcount=records_t.c.childcount + 1))
    return gid


def new_job(log: SyncLog, project: SeededProject, job: str, selection: list[Any],
            **params: Any) -> str:
    return submit(project_gid=project.gid, job=job, params={"selection": selection, **params},
                  actor=ACTOR, log=log, enqueue=lambda t: None)


def job_row(token: str) -> Any:
    with get_engine().connect() as conn:
        return conn.execute(select(jobs_t).where(jobs_t.c.token == token)).one()


def deps(log: SyncLog) -> Deps:
    """What a run works with: the test process's engines and ``log``."""
    return Deps.default(log)


def cfg(**kw: Any) -> RunConfig:
    base: dict[str, Any] = dict(batch_size=1000, progress_interval=0.0, heartbeat_interval=2.0,
                                stale_after=30.0, slice_seconds=60.0)
    return RunConfig(**{**base, **kw})


def run_to_end(token: str, log: SyncLog, config: RunConfig, limit: int = 500) -> list[str]:
    """Run a job, and again each time it re-queues itself, until it stops re-queueing."""
    queued = [token]
    outcomes: list[str] = []
    while queued and len(outcomes) < limit:
        queued.pop()
        outcomes.append(run(token, deps=Deps.default(log), cfg=config, requeue=queued.append))
    return outcomes


def do(log: SyncLog, project: SeededProject, job: str, selection: list[Any],
       params: dict[str, Any] | None = None, **kw: Any) -> tuple[str, Any]:
    """Queue a job and run it to its end in-process; returns its token and final row."""
    token = new_job(log, project, job, selection, **(params or {}))
    outcomes = run_to_end(token, log, cfg(**kw))
    assert outcomes[-1] in ("done", "rejected"), outcomes
    return token, job_row(token)


def space_events(log: SyncLog, space: str, key: str | None = None) -> list[dict[str, Any]]:
    """Every event of a sync space (optionally of one data key), in cursor order."""
    _, floor = log.cursors(space)
    out: list[dict[str, Any]] = []
    for page in log.pages(space, floor - 1):
        assert page.recovered
        out += [e.as_dict() for e in page.events if key is None or e.key == key]
    return out


def job_events(log: SyncLog, token: str) -> list[dict[str, Any]]:
    return space_events(log, keys.CC_SPACE, token)


def workflow(ids: list[int], action: str | None = None) -> list[Any]:
    with get_engine().connect() as conn:
        query = select(workflow_t).where(workflow_t.c.record_id.in_(ids))
        if action:
            query = query.where(workflow_t.c.action == action)
        return list(conn.execute(query.order_by(workflow_t.c.id)))


def versions(record_id: int) -> list[Any]:
    with get_engine().connect() as conn:
        return list(conn.execute(select(versions_t).where(versions_t.c.record_id == record_id)
                                 .order_by(versions_t.c.number)))


def assert_consistent(project_gid: str) -> None:
    """Every record is in one well-defined state: deleted rows carry a generation
    (``deleted_root``, itself a deleted root of its own generation); live rows have a live
    parent; every row's own status is ``draft`` or ``published``."""
    recs = records(project_gid)
    by_id = {r.id: r for r in recs.values()}
    for gid, r in recs.items():
        assert r.own_status in ("draft", "published"), gid
        if r.status == "deleted":
            root = by_id[r.deleted_root]
            assert (root.status, root.deleted_root) == ("deleted", root.id), gid
        else:
            if r.parent_id is not None:
                assert by_id[r.parent_id].status != "deleted", gid


def seed_deleted_subtrees(subtrees: int, *, projects: int = 1,
                          deleted_every: int = 1) -> SeedResult:
    """Projects of ``subtrees`` subtrees of 100 records, every ``deleted_every``-th deleted."""
    # the seeder budgets one link per 10,000 records (made only to live subtrees)
    with get_write_engine().begin() as conn:
        return seed(conn, records=subtrees * 100 + 1 + subtrees // 100, projects=projects,
                    seed_value=11, deleted_every=deleted_every)


def entries(token: str, action: str) -> list[int]:
    """Record ids of the workflow entries a job wrote (its token is in their comment)."""
    with get_engine().connect() as conn:
        return list(conn.execute(select(workflow_t.c.record_id).where(
            workflow_t.c.action == action, workflow_t.c.comment.contains(token))).scalars())


def assert_event_stream(events: list[dict[str, Any]], *, total: int, terminal: str) -> None:
    """One job's events across all its runs: INSERT queued first, the same ``total`` in every
    later event, ``remaining`` never rising, and exactly one terminal event, last."""
    statuses = [e["data"]["status"] for e in events]
    assert (events[0]["action"], statuses[0]) == ("INSERT", "queued")
    assert statuses[1] == "processing"
    assert [s for s in statuses if s in ("done", "rejected")] == [terminal]
    assert statuses[-1] == terminal
    assert all(s == "processing" for s in statuses[1:-1])
    assert {e["data"]["info"]["total"] for e in events[1:]} == {total}
    remaining = [e["data"]["info"]["remaining"] for e in events[1:]]
    assert remaining == sorted(remaining, reverse=True)
    cursors = [e["cursor"] for e in events]
    assert cursors == sorted(set(cursors))
