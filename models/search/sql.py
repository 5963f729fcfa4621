"""Search entries resolved to SQL: the whole result set into ``job_item``, or a page of ids.

One statement per search, built from three parts:

* the text part (``q``, records): each positive term is looked up in the search index
  (:meth:`~models.search.index.TextMatch.term_hits`), which also tells whether the title has
  it; the hits are counted per record — ``n`` matched terms, ``nt`` of them in the title.
  With ``+`` terms a record must have every one of them (a ``HAVING`` on the count of its
  ``+`` hits); ``-`` terms exclude through the index as well.  Without positive terms the
  records table itself is scanned (by project);
* the filter (:class:`~models.search.predicates.FilterSQL`);
* the fixed conditions: the project (never another project's rows), the ``exclude`` gids,
  and the status rule of SPEC §4 — mode ``"deleted"`` sees deleted records only, ``"live"``
  the live ones, unless the filter has a ``status`` condition, which then decides alone.

A search with neither ``q`` (or only a blank one) nor ``filter`` finds nothing, as Unicat's
search endpoints do.

Order (SPEC §4.1): more matched terms first, then more title matches, then gid.  Without a
``q`` the order is by gid.  Schema items are searched in ``schema_item`` (a small table):
``q`` matches their name and their label in the search language, the label counting as the
title; statuses and modes do not apply.

:func:`resolve_search` inserts like :mod:`models.resolve` does for children entries —
``INSERT INTO job_item … SELECT … ORDER BY <rank> ON CONFLICT DO NOTHING`` — so a search
entry joins the ordered union of its selection without any id passing through Python.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Literal

from sqlalchemy import Connection, text

from models import dialect
from models.records import deleted_sql, live_sql
from models.search.filter import AncestorIs, And, Filter, Kind, has_status
from models.search.index import TextMatch
from models.search.predicates import FilterSQL, Params, sqlite_functions
from models.selection import Search

Mode = Literal["live", "deleted"]

_STATUS = {"live": live_sql("r"), "deleted": deleted_sql("r")}
MATERIALIZED = frozenset({"deffield"})  # evaluated once, then probed per record


@dataclass
class Plan:
    """The parts of one search statement: ``WITH <ctes> SELECT <id> <body> ORDER BY …``,
    where ``body`` is ``FROM … WHERE …`` (it always ends in its WHERE conditions)."""

    id_expr: str
    body: str
    order: str
    params: dict[str, object]
    ctes: dict[str, str] = field(default_factory=dict)

    def with_clause(self) -> str:
        if not self.ctes:
            return ""
        return "WITH " + ", ".join(
            f"{name} AS {'MATERIALIZED ' if name in MATERIALIZED else ''}({sql})"
            for name, sql in self.ctes.items()
        ) + " "


def resolve_search(
    conn: Connection, *, token: str, project_gid: str, entry: Search, kind: Kind = "records",
    mode: Mode = "live",
) -> None:
    """Insert every item the search finds into ``job_item`` for ``token``, in rank order."""
    plan = plan_search(conn, project_gid=project_gid, search=entry, kind=kind, mode=mode)
    pg = dialect.is_pg(conn)
    if pg:
        # The whole result is sorted by rank; 100,000 rows overflow the default 4 MB and the
        # sort would spill to disk.  SET LOCAL ends with this transaction.  PostgreSQL costs
        # every prefix query (``term:*``) at a fixed share of the table and then hashes the
        # whole record table for it; with sequential scans off for this one statement the
        # GIN index finds the hits and each record is one primary-key lookup, whatever the
        # project's size.
        conn.execute(text("SET LOCAL work_mem = '64MB'"))
        conn.execute(text("SET LOCAL enable_seqscan = off"))
    conn.execute(text(
        f"{plan.with_clause()}INSERT INTO job_item (job_token, item_id) "
        f"SELECT :tok, {plan.id_expr} {plan.body} ORDER BY {plan.order} "
        "ON CONFLICT (job_token, item_id) DO NOTHING"
    ), {**plan.params, "tok": token})
    if pg:
        conn.execute(text("SET LOCAL enable_seqscan = DEFAULT"))


def search_ids(
    conn: Connection, *, project_gid: str, search: Search, kind: Kind = "records",
    offset: int = 0, limit: int = 100, mode: Mode = "live",
) -> list[int]:
    """One page of the search's result, in rank order: internal ids (``record.id`` or
    ``schema_item.id``).  Reads look at live records unless the filter asks for a status."""
    if offset < 0 or limit < 0:
        raise ValueError("offset and limit must not be negative")
    plan = plan_search(conn, project_gid=project_gid, search=search, kind=kind, mode=mode)
    rows = conn.execute(text(
        f"{plan.with_clause()}SELECT {plan.id_expr} {plan.body} ORDER BY {plan.order} "
        "LIMIT :lim OFFSET :off"
    ), {**plan.params, "lim": int(limit), "off": int(offset)})
    return [int(r[0]) for r in rows]


def search_count(
    conn: Connection, *, project_gid: str, search: Search, kind: Kind = "records",
    mode: Mode = "live",
) -> int:
    """How many items the search finds (the ``records.size`` of a paged read)."""
    plan = plan_search(conn, project_gid=project_gid, search=search, kind=kind, mode=mode)
    return int(conn.execute(text(
        f"{plan.with_clause()}SELECT COUNT(*) {plan.body}"
    ), plan.params).scalar_one())


def plan_search(
    conn: Connection, *, project_gid: str, search: Search, kind: Kind, mode: Mode,
    now: float | None = None,
) -> Plan:
    """Build the statement parts for a search (see the module docstring)."""
    sqlite_functions(conn)
    params = Params("f")
    fsql = FilterSQL(conn, kind=kind, project_gid=project_gid, language=search.language,
                     params=params, now=time.time() if now is None else now)
    plan = (_schema_plan(conn, fsql, params, search) if kind == "schema"
            else _records_plan(conn, fsql, params, search, mode))
    if not search.q and search.filter is None:
        # Neither q nor filter: nothing, as in Unicat's search endpoints — and a selection
        # entry can never pick a whole project by accident.
        plan.body += " AND 1 = 0"
    elif search.q and not search.q.positive:
        # Only -terms: with no +term a result needs at least one bare term (SPEC §4.1), so
        # nothing matches — "-draft" never selects every record without "draft".
        plan.body += " AND 1 = 0"
    return plan


def _records_plan(
    conn: Connection, fsql: FilterSQL, params: Params, search: Search, mode: Mode
) -> Plan:
    where = [f"r.project_gid = {fsql.proj}"]
    if not dialect.is_pg(conn) and any(isinstance(c, AncestorIs)
                                       for c in _conjuncts(search.filter)):
        # SQLite prefers the (project, status) index to the subtree's mpath range, and then
        # reads the whole project; a unary + keeps the project condition out of index choice.
        where[0] = "+" + where[0]
    if not has_status(search.filter):
        where.append(_STATUS[mode])
    if search.filter is not None:
        where.append(fsql.compile(search.filter))
    where += _exclude(conn, params, "r.gid", search)
    query = search.q
    match = TextMatch(conn, search.language, params.values, prefix="t") if query else None
    if match and query.must_not:
        where.append(match.excludes("r.id", query.must_not))
    positive = query.positive
    if match is None or not positive:
        return Plan("r.id", f"FROM record r WHERE {' AND '.join(where)}", "r.gid",
                    params.values, fsql.ctes)
    if dialect.is_pg(conn):
        # The text hits drive the statement, each record one primary-key lookup: keep the
        # project condition a filter, not a (project-wide) index scan to intersect with.
        where[0] = f"(r.project_gid || '') = {fsql.proj}"
    must = len(query.must)
    if len(positive) == 1:
        # One term: every hit has it once; no grouping needed.
        ctes = {"ranked": f"SELECT id, 1 AS n, ti AS nt FROM ({match.term_hits(positive[0])}) AS a"}
    else:
        hits = " UNION ALL ".join(f"SELECT id, {i} AS t, ti FROM ({match.term_hits(term)}) AS a{i}"
                                  for i, term in enumerate(positive))
        having = (f" HAVING SUM(CASE WHEN t < {must} THEN 1 ELSE 0 END) = {must}"
                  if must else "")
        ctes = {"hit": hits,
                "ranked": f"SELECT id, COUNT(*) AS n, SUM(ti) AS nt FROM hit GROUP BY id{having}"}
    return Plan("r.id", f"FROM ranked h JOIN record r ON r.id = h.id WHERE {' AND '.join(where)}",
                "h.n DESC, h.nt DESC, r.gid", params.values, {**ctes, **fsql.ctes})


def _schema_plan(conn: Connection, fsql: FilterSQL, params: Params, search: Search) -> Plan:
    where = [f"s.project_gid = {fsql.proj}"]
    if search.filter is not None:
        where.append(fsql.compile(search.filter))
    where += _exclude(conn, params, "s.gid", search)
    query = search.q
    order = "s.gid"
    if query:
        label = fsql.label()
        where.append(fsql.text_query(query, ["s.name", label]))
        if query.positive:
            def count(texts: list[str]) -> str:
                return " + ".join(
                    "CASE WHEN (" + " OR ".join(fsql.text_has(t, term) for t in texts)
                    + ") THEN 1 ELSE 0 END" for term in query.positive
                )
            order = f"{count(['s.name', label])} DESC, {count([label])} DESC, s.gid"
    return Plan("s.id", f"FROM schema_item s WHERE {' AND '.join(where)}", order,
                params.values, fsql.ctes)


def _conjuncts(node: Filter | None) -> list[Filter]:
    """The conditions every result must meet: the filter, or the parts of a top-level and."""
    if node is None:
        return []
    if isinstance(node, And):
        return [c for part in node.parts for c in _conjuncts(part)]
    return [node]


def _exclude(conn: Connection, params: Params, column: str, search: Search) -> list[str]:
    if not search.exclude:
        return []
    name = params.name(json.dumps(sorted(search.exclude)))
    return [f"{column} NOT IN (SELECT x.value FROM {dialect.json_rows(conn, name, 'x')})"]
