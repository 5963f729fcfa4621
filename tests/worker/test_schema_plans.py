"""Plan tests for the schema jobs on a database as a deployment has it: on SQLite nothing
runs ``ANALYZE``, so the planner has no statistics and guesses that any equality on an
indexed column finds a handful of rows — a constant ``project_gid = :proj`` term then
looks as selective as the batch's ids, and a statement can start from the project's range
of schema items (or records) instead of from its batch.  (``test_plans`` checks the same
jobs on an analysed database.)  PostgreSQL is analysed, as autovacuum keeps it.

Each job runs one batch of fields among 20,000 (half of them modified), and one of
definitions whose working copies carry layout copies (some shared with a class's copy)
and are used by records, and of new definitions; every statement must reach its rows
through an index, and no statement may range over the project's schema items by project
alone.  Batches of 1,000 on SQLite (the more ids, the likelier its guess prefers the
project's range); of 50 on PostgreSQL, whose statistics rightly prefer one pass over
these tables to a thousand lookups in them.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, insert, text

from models.jobs import Job
from models.resolve import resolve_into
from models.schema import SchemaItem
from models.seed import seed
from models.selection import parse_selection
from tests.plans import PROJECT_WIDE, captured, explained, own_database, violations
from worker.jobs import CATALOGUE, Context
from worker.jobs.base import Effects

pytestmark = pytest.mark.services

RECORDS = 20_000
FIELDS = 20_000
DEFINITIONS = 400
NEW_DEFINITIONS = 100
#: Ranges over the project's schema items by project alone (SQLite plan details).
SCHEMA_WIDE = (*PROJECT_WIDE, "ix_schema_item_project_name (project_gid=?)",
               "ix_schema_item_project_type (project_gid=?)")
JOBS = ["bulk_commit_schema_items", "bulk_revert_schema_items",
        "bulk_save_as_new_schema_items", "bulk_copy_schema_items"]


@pytest.fixture(scope="module")
def schema_db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A database of its own: 20,000 seeded records, the schema items of
    :func:`_seed_schema` and a big finished job's items; analysed on PostgreSQL only."""
    with own_database(tmp_path_factory.mktemp("schema_plans"), "schema_plans") as engine:
        yield from _schema_db(engine)


def _schema_db(engine: Engine) -> Iterator[dict[str, Any]]:
    with engine.connect().execution_options(writer=True) as conn, conn.begin():
        project = seed(conn, records=RECORDS, seed_value=5).projects[0].gid
        seeded = _seed_schema(conn, project)
        conn.execute(text("INSERT INTO job_item (job_token, item_id) "  # a finished job's
                          "SELECT 'a-finished-job', id FROM record"))
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn, conn.begin():
            conn.execute(text("ANALYZE"))
    yield {"engine": engine, "project": project, **seeded}


def _item(project: str, type_: str, name: str, *, original: str | None = None,
          layout: str | None = None, new: bool = False) -> dict[str, Any]:
    now = time.time()
    return {"gid": str(uuid.uuid4()), "project_gid": project, "type": type_, "name": name,
            "label": {"en": name}, "is_new": new, "is_working_copy": original is not None,
            "original": original, "is_base": False, "is_extended": False, "classes": [],
            "fields": [], "layout": layout, "body": {}, "created_on": now, "updated_on": now}


def _seed_schema(conn: Connection, project: str) -> dict[str, list[str]]:
    """Fields, every other one modified; definitions with layouts, every other one modified
    with a layout copy that every fourth shares with a modified class, records using the
    definition copies; new definitions with new layouts, records using them.  Returns the
    gids selected by the scenarios."""
    rows = [_item(project, "field", f"sp_f{i:05d}") for i in range(FIELDS)]
    rows += [_item(project, "field", r["name"], original=r["gid"]) for r in rows[::2]]
    fields = [r["gid"] for r in rows[:FIELDS]]
    definitions, users = [], []
    for i in range(DEFINITIONS):
        layout = _item(project, "layout", f"sp_l{i}")
        definition = _item(project, "definition", f"sp_d{i}", layout=layout["gid"])
        rows += [layout, definition]
        definitions.append(definition["gid"])
        if i % 2 == 0:
            layout_copy = _item(project, "layout", f"sp_l{i}", original=layout["gid"])
            copy = _item(project, "definition", f"sp_d{i}", original=definition["gid"],
                         layout=layout_copy["gid"])
            rows += [layout_copy, copy]
            users.append(copy["gid"])
        if i % 4 == 0:
            cls = _item(project, "class", f"sp_c{i}", layout=layout["gid"])
            rows += [cls, _item(project, "class", f"sp_c{i}", original=cls["gid"],
                                layout=layout_copy["gid"])]
    new = []
    for i in range(NEW_DEFINITIONS):
        layout = _item(project, "layout", f"sp_nl{i}", new=True)
        definition = _item(project, "definition", f"sp_nd{i}", layout=layout["gid"], new=True)
        rows += [layout, definition]
        new.append(definition["gid"])
    conn.execute(insert(SchemaItem.__table__), rows)
    _use_definitions(conn, project, users + new[::2])
    return {"fields": fields, "definitions": definitions, "new": new}


def _use_definitions(conn: Connection, project: str, definitions: list[str]) -> None:
    """Ten records for each of ``definitions``."""
    ids = conn.execute(text("SELECT id FROM record WHERE project_gid = :p AND parent_id "
                            "IS NOT NULL ORDER BY id LIMIT :n"),
                       {"p": project, "n": 10 * len(definitions)}).scalars().all()
    conn.execute(text("UPDATE record SET definition = :d WHERE id = :i"),
                 [{"d": definitions[n % len(definitions)], "i": i} for n, i in enumerate(ids)])


def _batch(db: dict[str, Any]) -> int:
    return 50 if db["engine"].dialect.name == "postgresql" else 1000


def _run(conn: Connection, job: str, project: str, selection: list[str], batch: int) -> None:
    """Resolve ``selection`` for ``job`` and run its first batch, in ``conn``'s
    transaction."""
    spec = CATALOGUE[job]
    token = str(uuid.uuid4())
    conn.execute(insert(Job.__table__).values(token=token, project_gid=project, job=job,
                                              params={"selection": selection}, info={},
                                              actor={}))
    resolve_into(conn, token=token, project_gid=project, mode=spec.mode,
                 selection=parse_selection(selection, kind=spec.kind))
    ids = list(conn.execute(text("SELECT item_id FROM job_item WHERE job_token = :t "
                                 "ORDER BY id LIMIT :n"), {"t": token, "n": batch}).scalars())
    ctx = Context(token=token, project_gid=project, actor={}, params={"selection": selection},
                  now=time.time(), effects=Effects(collect_events=True))
    spec.batch(conn, ctx, ids)


def _check(db: dict[str, Any], job: str, selection: list[str]) -> None:
    """Run one batch of ``job`` in a transaction that is rolled back, and check the plans
    of every statement it ran."""
    engine = db["engine"]
    with engine.connect().execution_options(writer=True) as conn, conn.begin() as tx:
        with captured(engine) as cap:
            _run(conn, job, db["project"], selection, _batch(db))
        assert explained(cap) > 0
        bad = violations(conn, cap, wide=SCHEMA_WIDE)
        tx.rollback()
    assert not bad, "plans that grow with the project:\n" + "\n".join(bad)


@pytest.mark.parametrize("job", JOBS)
def test_a_batch_of_fields_reaches_its_rows_by_index(schema_db: dict[str, Any],
                                                     job: str) -> None:
    """A batch of the 20,000 fields, half of them modified."""
    _check(schema_db, job, schema_db["fields"][:_batch(schema_db)])


@pytest.mark.parametrize("job", JOBS)
def test_a_batch_of_definitions_reaches_its_rows_by_index(schema_db: dict[str, Any],
                                                          job: str) -> None:
    """Definitions with layouts: working copies with layout copies (some shared with a
    class's copy) that records use, and new definitions (some used by records): the
    layout, record and duplicate statements as well."""
    n = _batch(schema_db) // 5
    _check(schema_db, job, schema_db["definitions"][:4 * n] + schema_db["new"][:n])


def test_a_constant_project_term_is_caught(schema_db: dict[str, Any]) -> None:
    """The rules bite on this database: the commit's update of the originals, with the
    target's project matched to a constant, starts from the project's schema items on
    SQLite (on PostgreSQL, analysed, it does not)."""
    if schema_db["engine"].dialect.name != "sqlite":
        pytest.skip("SQLite's planner without statistics")
    engine = schema_db["engine"]
    with engine.connect() as conn, conn.begin():
        ids = conn.execute(text("SELECT id FROM schema_item WHERE is_working_copy = true "
                                "AND type = 'field' LIMIT 500")).scalars().all()
        with captured(engine) as cap:
            conn.execute(text(
                "SELECT schema_item.gid FROM schema_item, schema_item AS c "
                f"WHERE c.id IN ({','.join(map(str, ids))}) AND c.is_working_copy = true "
                "AND schema_item.gid = c.original AND schema_item.project_gid = :p"),
                {"p": schema_db["project"]})
        bad = violations(conn, cap, wide=SCHEMA_WIDE)
    assert len(bad) == 1, bad
