"""Plan tests: every statement that a job's resolution, prepare step and batch, a
``records/bulk/get`` page and a job's finish run reaches its rows through the index made for
that access — an ``mpath`` range per subtree, a lookup per id, the search index — on a
seeded (100,000 records), analysed database, on SQLite and PostgreSQL alike.  A full scan
of a big table, or a project-wide range driving a batch statement, fails the test with the
statement and its plan.  Plans, not timings: they do not flake.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, insert, text

from models.jobs import Job
from models.outbox import SyncOutbox
from models.reads import page
from models.resolve import resolve_into
from models.schema import SchemaItem
from models.seed import seed
from models.selection import parse_selection
from tests.plans import BIG_TABLES, PROJECT_WIDE, captured, explained, own_database, violations
from worker.jobs import CATALOGUE, Context
from worker.jobs.base import Effects
from worker.jobs.records import _done_by_job
from worker.lease import claim, finish, first_in_line
from worker.outbox import outbox_ids
from worker.rows import load, load_state

pytestmark = pytest.mark.services

RECORDS = 100_000


@pytest.fixture(scope="module")
def plan_db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A database of its own: 100,000 seeded records (every tenth subtree deleted, links,
    versions), workflow entries for every record, a big finished job's items, a few
    permanently deleted subtrees (10,000 tombstones), then analysed."""
    with own_database(tmp_path_factory.mktemp("plans"), "plans") as engine:
        yield from _plan_db(engine)


def _plan_db(engine: Engine) -> Iterator[dict[str, Any]]:
    with engine.connect().execution_options(writer=True) as conn, conn.begin():
        result = seed(conn, records=RECORDS, seed_value=3)
        project = result.projects[0]
        conn.execute(text(
            "INSERT INTO workflow_entry (record_id, action, review_state, actor, time, comment) "
            "SELECT id, 'publish', 'published', '{}', 0, '' FROM record"))
        conn.execute(text("INSERT INTO job_item (job_token, item_id) "
                          "SELECT 'a-finished-job', id FROM record"))
        root_id = _root_id(conn, project.gid)
        schema_gids = _seed_fields(conn, project.gid, SCHEMA_ITEMS)
    with engine.connect().execution_options(writer=True) as conn, conn.begin():
        # Tombstones: a hundred deleted subtrees removed for good.
        heads = _deleted_heads(conn, root_id)[-100:]
        _run(conn, "bulk_permanent_delete_records", project.gid, [_gid(conn, h) for h in heads])
    with engine.connect() as conn, conn.begin():
        conn.execute(text("ANALYZE"))
    yield {"engine": engine, "project": project.gid, "root": project.root, "root_id": root_id,
           "schema": schema_gids}


#: Committed fields seeded for the schema jobs, half of them with a working copy.
SCHEMA_ITEMS = 10_000


def _seed_fields(conn: Connection, project: str, n: int) -> list[str]:
    """``n`` committed fields, every other one with a working copy; returns their gids."""
    now = time.time()
    gids = [str(uuid.uuid4()) for _ in range(n)]

    def row(gid: str, i: int, original: str | None) -> dict[str, Any]:
        return {"gid": gid, "project_gid": project, "type": "field", "name": f"plan_{i:05d}",
                "label": {"en": f"Field {i}"}, "is_new": False,
                "is_working_copy": original is not None, "original": original,
                "is_base": False, "is_extended": False, "classes": [], "fields": [],
                "layout": None, "body": {"type": "textline", "is_localized": False},
                "created_on": now, "updated_on": now}

    rows = [row(g, i, None) for i, g in enumerate(gids)]
    rows += [row(str(uuid.uuid4()), i, g) for i, g in enumerate(gids) if i % 2 == 0]
    conn.execute(insert(SchemaItem.__table__), rows)
    return gids


def _root_id(conn: Connection, project: str) -> int:
    return int(conn.execute(text("SELECT id FROM record WHERE parent_id IS NULL "
                                 "AND project_gid = :p"), {"p": project}).scalar_one())


def _gid(conn: Connection, rid: int) -> str:
    return str(conn.execute(text("SELECT gid FROM record WHERE id = :i"), {"i": rid}).scalar_one())


def _deleted_heads(conn: Connection, root_id: int) -> list[int]:
    return list(conn.execute(text(
        "SELECT d.record_id FROM record_deletion d JOIN record r ON r.id = d.record_id "
        "WHERE r.parent_id = :root AND d.deleted_root = d.record_id ORDER BY d.record_id"
    ), {"root": root_id}).scalars())


def _live_heads(conn: Connection, root_id: int) -> list[int]:
    return list(conn.execute(text(
        "SELECT r.id FROM record r WHERE r.parent_id = :root AND NOT EXISTS "
        "(SELECT 1 FROM record_deletion d WHERE d.record_id = r.id) ORDER BY r.id"
    ), {"root": root_id}).scalars())


def _run(conn: Connection, job: str, project: str, selection: list[Any], *,
         batch: int = 1000, params: dict[str, Any] | None = None) -> str:
    """Resolve, prepare and run the first batch of ``job`` inside ``conn``'s transaction."""
    spec = CATALOGUE[job]
    token = str(uuid.uuid4())
    params = {"selection": selection, **(params or {})}
    conn.execute(insert(Job.__table__).values(
        token=token, project_gid=project, job=job, params=params, info={}, actor={}))
    parsed = parse_selection(selection, kind=spec.kind)
    resolve_into(conn, token=token, project_gid=project, mode=spec.mode, selection=parsed)
    if spec.prepare is not None:
        spec.prepare(conn, token, project, parsed)
    ids = list(conn.execute(text("SELECT item_id FROM job_item WHERE job_token = :t "
                                 "ORDER BY id LIMIT :n"), {"t": token, "n": batch}).scalars())
    ctx = Context(token=token, project_gid=project, actor={}, params=params, now=time.time(),
                  effects=Effects(collect_events=True))
    spec.batch(conn, ctx, ids)
    return token


def _check(plan_db: dict[str, Any], scenario: Any, setup: Any = None) -> None:
    """Run ``scenario(conn, setup(conn))`` in a transaction that is rolled back, and check
    every statement the scenario ran (the set-up's are not checked)."""
    engine = plan_db["engine"]
    with engine.connect().execution_options(writer=True) as conn:
        with conn.begin() as tx:
            arg = setup(conn) if setup is not None else None
            with captured(engine) as cap:
                scenario(conn, arg)
            assert explained(cap) > 0
            bad = violations(conn, cap)
            tx.rollback()
    assert not bad, "plans that grow with the project:\n" + "\n".join(bad)


#: A search that finds a few dozen records: the search index drives it.  (One that finds a
#: large share of the project is rightly a scan of the search table.)
SEARCH = {"search": {"language": "en", "q": "+4242"}}


@pytest.mark.parametrize("job, selection", [
    ("bulk_delete_records", "children"),
    ("bulk_delete_records", "gids"),
    ("bulk_delete_records", "search"),
    ("bulk_delete_records", "nested"),
    ("bulk_undelete_records", "children"),
    ("bulk_undelete_records", "gids"),
    ("bulk_permanent_delete_records", "children"),
    ("bulk_permanent_delete_records", "gids"),
    ("permanent_delete_record", "gids"),
    ("revert_record_version", "gids"),
    ("restore_record_version", "gids"),
])
def test_job_statements_use_their_indexes(plan_db: dict[str, Any], job: str,
                                          selection: str) -> None:
    """Resolution, prepare and a batch of each record job: index access only."""
    project, root = plan_db["project"], plan_db["root"]

    def setup(conn: Connection) -> list[Any]:
        deleted = CATALOGUE[job].mode == "deleted"
        heads = (_deleted_heads if deleted else _live_heads)(conn, plan_db["root_id"])
        if selection == "children":
            sel: list[Any] = [{"children": root}]
        elif selection == "search":
            sel = [SEARCH]
        elif selection == "nested":  # heads and some of their children, children first
            kids = conn.execute(text("SELECT gid FROM record WHERE parent_id IN (:a, :b)"),
                                {"a": heads[0], "b": heads[1]}).scalars().all()
            sel = list(kids) + [_gid(conn, h) for h in heads[:20]]
        else:
            sel = [_gid(conn, h) for h in heads[:20]]
        return sel

    def scenario(conn: Connection, sel: list[Any]) -> None:
        params: dict[str, Any] | None = None
        if job == "revert_record_version":
            params = {"version": 0}
        elif job == "restore_record_version":
            params = {"version": conn.execute(text(
                "SELECT v.id FROM record_version v JOIN record r ON r.id = v.record_id "
                "WHERE r.gid = :g AND v.number = 0"), {"g": sel[0]}).scalar_one()}
        _run(conn, job, project, sel, batch=20, params=params)

    _check(plan_db, scenario, setup)


@pytest.mark.parametrize("job", ["bulk_commit_schema_items", "bulk_revert_schema_items",
                                 "bulk_save_as_new_schema_items", "bulk_copy_schema_items"])
def test_schema_job_statements_use_their_indexes(plan_db: dict[str, Any], job: str) -> None:
    """Resolution and a batch of each schema job over 20 of 10,000 fields (half of them
    modified): index access only."""
    def scenario(conn: Connection, _: None) -> None:
        _run(conn, job, plan_db["project"], plan_db["schema"][:20], batch=20)

    _check(plan_db, scenario)


def test_read_pages_use_their_indexes(plan_db: dict[str, Any]) -> None:
    """The first page of ``records/bulk/get`` (resolution, old read tokens dropped) and the
    next page."""
    def scenario(conn: Connection, _: None) -> None:
        sel = parse_selection([{"children": plan_db["root"]}, SEARCH], kind="records")
        first = page(conn, project_gid=plan_db["project"], user_gid="reader", selection=sel,
                     cursor=None, size=50)
        assert first.cursor is not None
        page(conn, project_gid=plan_db["project"], user_gid="reader", selection=sel,
             cursor=first.cursor, size=50)

    _check(plan_db, scenario)


def test_finish_uses_its_indexes(plan_db: dict[str, Any]) -> None:
    """A job's finish: its terminal state and the clean-up of its items."""
    def scenario(conn: Connection, _: None) -> None:
        token = _run(conn, "bulk_delete_records", plan_db["project"],
                     [{"children": plan_db["root"]}], batch=5)
        conn.execute(text("UPDATE job SET status = 'processing' WHERE token = :t"),
                     {"t": token})
        assert finish(conn, token, status="done", info={}, owner=None)

    _check(plan_db, scenario)


#: Finished jobs of the project in the claim's plan test: a project's history (kept for
#: ``JOB_RETENTION_DAYS``) that no run may walk.
HISTORY = 20_000


def test_a_runs_claim_and_reads_use_the_job_indexes(plan_db: dict[str, Any]) -> None:
    """A run's claim and its reads of the job (the first job in line, the lease, the row,
    its stored selection, its outbox): lookups, not a walk through the project's finished
    jobs, with 20,000 of them before the queued one."""
    engine, project = plan_db["engine"], plan_db["project"]
    with engine.connect().execution_options(writer=True) as conn, conn.begin() as tx:
        now = time.time()
        conn.execute(insert(Job.__table__), [
            dict(token=str(uuid.uuid4()), project_gid=project, job="bulk_delete_records",
                 status="done", params={}, info={}, actor={}, attempts=1,
                 created_on=now - HISTORY + i, updated_on=now, finished_on=now)
            for i in range(HISTORY)])
        queued = str(uuid.uuid4())
        conn.execute(insert(Job.__table__).values(
            token=queued, project_gid=project, job="bulk_delete_records", params={}, info={},
            actor={}, created_on=now, updated_on=now))
        conn.execute(insert(SyncOutbox.__table__), [  # other runs' events in flight
            dict(job_token=f"another-run-{i % 50}", project_gid=project, data_type="records",
                 action="DELETE", gids="", created_on=now) for i in range(5_000)])
        conn.execute(text("ANALYZE"))
        with captured(engine) as cap:
            first_in_line(conn, queued, stale_after=30)  # the oldest queued job of the project
            assert claim(conn, queued, "a-run", stale_after=30)
            assert load(conn, queued) is not None and load_state(conn, queued) is not None
            outbox_ids(conn, queued)
        assert explained(cap) >= 6
        bad = violations(conn, cap, big=BIG_TABLES | {"job", "sync_outbox"},
                         wide=(*PROJECT_WIDE, "ix_job_project_created"))
        tx.rollback()
    assert not bad, "plans that grow with the project's jobs:\n" + "\n".join(bad)


def test_the_checker_catches_a_full_scan(plan_db: dict[str, Any]) -> None:
    """The rules bite: a statement that scans every record, or ranges over the whole
    project, is reported."""
    engine = plan_db["engine"]
    with engine.connect() as conn, conn.begin():
        with captured(engine) as cap:
            conn.execute(text("SELECT COUNT(*) FROM record WHERE mpath LIKE '%1%'"))
            conn.execute(text("SELECT id FROM record WHERE project_gid = :p AND status = 'draft'"),
                         {"p": plan_db["project"]})
        bad = violations(conn, cap)
    assert len(bad) == 2, bad
    assert json.dumps(bad)


def test_a_jobs_own_workflow_entries_are_found_per_id(plan_db: dict[str, Any]) -> None:
    """Whether the job deleted (or undeleted) the generation roots of a batch — a thousand
    of them when the batch's records hang under a thousand selected heads — is a
    ``record_id`` lookup per root, not a scan of every workflow entry."""
    engine = plan_db["engine"]
    with engine.connect() as conn, conn.begin():
        ids = set(conn.execute(text("SELECT id FROM record ORDER BY id LIMIT 1000")).scalars())
        with captured(engine) as cap:
            _done_by_job(conn, "a-job", ids, "delete")
        assert explained(cap) >= 1
        bad = violations(conn, cap)
    assert not bad, "plans that grow with the project:\n" + "\n".join(bad)
