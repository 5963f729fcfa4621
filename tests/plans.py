"""Plan checks: every statement a piece of code runs, explained on a seeded, analysed
database, must reach its rows through an index — no full scan of a big table, and no
project-wide range driving a statement that should touch only its batch.

:func:`captured` records the statements (with their parameters) that a block runs on an
engine; :func:`violations` explains each one (``EXPLAIN QUERY PLAN`` on SQLite, ``EXPLAIN
(FORMAT JSON)`` on PostgreSQL) and returns what breaks the rules.  Plans, not timings: a
plan does not flake.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, event, make_url, text

#: Tables that grow with the content (or with the jobs run): a full scan of any of them is a
#: plan that grows with the project, not with the work.
BIG_TABLES = frozenset({
    "record", "record_deletion", "workflow_entry", "job_item", "record_version",
    "record_tombstone", "record_search", "schema_item",
})
#: An index whose only use is "every record of the project".
PROJECT_WIDE = ("ix_record_project_status",)


@dataclass
class Capture:
    statements: list[tuple[str, Any]] = field(default_factory=list)


@contextlib.contextmanager
def captured(engine: Engine) -> Iterator[Capture]:
    """Record every statement (and its parameters) run on ``engine`` inside the block."""
    cap = Capture()

    def before(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any,
               executemany: bool) -> None:
        # An executemany's first row; a many-values INSERT (executemany, too) is one row of
        # parameters already.
        if executemany and isinstance(parameters, (list, tuple)) and parameters \
                and isinstance(parameters[0], (dict, list, tuple)):
            parameters = parameters[0]
        cap.statements.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", before)
    try:
        yield cap
    finally:
        event.remove(engine, "before_cursor_execute", before)


_SKIP = re.compile(r"^\s*(EXPLAIN|BEGIN|COMMIT|ROLLBACK|PRAGMA|SAVEPOINT|RELEASE|ANALYZE|SET)\b",
                   re.IGNORECASE)
#: Planner settings a statement ran under (``SET LOCAL``): replayed in order while checking.
_SETTING = re.compile(r"^\s*SET\s+LOCAL\b", re.IGNORECASE)
#: A TEMP table a statement filled (PostgreSQL, ``ON COMMIT DROP``): checked, then made
#: again while checking, so that the statements reading it can be planned; dropping it is
#: left to the end of the transaction.
_TEMP = re.compile(r"^\s*CREATE\s+TEMP\s+TABLE\b", re.IGNORECASE)
_DROP = re.compile(r"^\s*DROP\s+TABLE\b", re.IGNORECASE)
_ALIAS = re.compile(r"\b(?:FROM|JOIN|UPDATE|INTO)\s+([a-z_][a-z0-9_]*)(?:\s+(?:AS\s+)?"
                    r"(?!ON\b|WHERE\b|SET\b|USING\b|CROSS\b|LEFT\b|JOIN\b|GROUP\b|ORDER\b|"
                    r"LIMIT\b|WITH\b|RETURNING\b|VALUES\b|SELECT\b|AND\b)([a-z_][a-z0-9_]*))?",
                    re.IGNORECASE)


def _aliases(sql: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for table, alias in _ALIAS.findall(sql):
        out[table.lower()] = table.lower()
        if alias:
            out[alias.lower()] = table.lower()
    return out


def _sqlite_violations(conn: Connection, sql: str, params: Any, big: frozenset[str],
                       wide: tuple[str, ...]) -> list[str]:
    aliases = _aliases(sql)
    bad = []
    for row in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql, params).all():
        detail = str(row[-1])
        scan = re.match(r"SCAN (\S+)(.*)", detail)
        if scan and "VIRTUAL TABLE" not in scan.group(2):
            table = aliases.get(scan.group(1).lower(), scan.group(1).lower())
            if table in big:
                bad.append(detail)
        if any(ix in detail for ix in wide):
            bad.append(detail)
        if "AUTOMATIC" in detail:  # an index built for the statement, from a full scan
            table = aliases.get(detail.split()[1].lower(), detail.split()[1].lower())
            if table in big:
                bad.append(detail)
    return bad


def _pg_nodes(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield node
    for child in node.get("Plans", []):
        yield from _pg_nodes(child)


def _pg_violations(conn: Connection, sql: str, params: Any, big: frozenset[str],
                   wide: tuple[str, ...]) -> list[str]:
    raw = conn.exec_driver_sql("EXPLAIN (FORMAT JSON) " + sql, params).scalar()
    plan = raw if isinstance(raw, list) else json.loads(raw)
    bad = []
    for node in _pg_nodes(plan[0]["Plan"]):
        kind = node.get("Node Type", "")
        if "Seq Scan" in kind and node.get("Relation Name") in big:
            bad.append(f"{kind} on {node['Relation Name']}")
        if node.get("Index Name") in wide:
            bad.append(f"{kind} using {node['Index Name']}")
    return bad


def violations(conn: Connection, cap: Capture, big: frozenset[str] = BIG_TABLES,
               wide: tuple[str, ...] = PROJECT_WIDE) -> list[str]:
    """Each captured statement whose plan breaks the rules, with what breaks them (``big``:
    the tables no statement may scan whole; ``wide``: indexes no statement may range over
    by project alone)."""
    check = _pg_violations if conn.dialect.name == "postgresql" else _sqlite_violations
    out = []
    for sql, params in cap.statements:
        if _SETTING.match(sql):
            conn.exec_driver_sql(sql, params)
            continue
        if _SKIP.match(sql) or _DROP.match(sql):
            continue
        bad = check(conn, sql, params, big, wide)
        if bad:
            out.append(" ".join(sql.split())[:200] + "\n    " + "\n    ".join(bad))
        if _TEMP.match(sql) and conn.dialect.name == "postgresql":  # dropped at commit
            conn.exec_driver_sql(sql, params)
    return out


def explained(cap: Capture) -> int:
    """How many of the captured statements :func:`violations` explains."""
    return sum(1 for sql, _ in cap.statements if not _SKIP.match(sql))


@contextlib.contextmanager
def own_database(directory: Path, name: str) -> Iterator[Engine]:
    """A migrated database of its own beside the test database (PostgreSQL: a database
    ``<test database>_<name>``; SQLite: a file in ``directory``), removed afterwards."""
    from models.engine import make_engine, migrate

    url = os.environ["DATABASE_URL"]
    admin: Engine | None = None
    if url.startswith("postgresql"):
        database = f"{make_url(url).database}_{name}"
        admin = make_engine(url).execution_options(isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{database}"'))
            conn.execute(text(f'CREATE DATABASE "{database}"'))
        url = make_url(url).set(database=database).render_as_string(hide_password=False)
    else:
        url = f"sqlite:///{directory}/{name}.db"
    engine = make_engine(url)
    migrate(engine)
    try:
        yield engine
    finally:
        engine.dispose()
        if admin is not None:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{make_url(url).database}"'))
            admin.dispose()
        else:
            Path(make_url(url).database or "").unlink(missing_ok=True)
