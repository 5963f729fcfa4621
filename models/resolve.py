"""Selection resolution: a typed :class:`~models.selection.Selection` turned into SQL.

Resolution streams the selection into ``job_item`` rows with ``INSERT … SELECT`` — one
statement per entry (a run of plain gids is one entry) — so no gid list is ever held in
Python and the cost grows with the number of entries, not with the number of items.
``job_item.id`` gives the ordered union: rows are inserted in entry order, and the unique
``(job_token, item_id)`` constraint drops gids seen before.

Schema selections (``kind == "schema"``) resolve plain gids against ``schema_item``; a
selected original whose working copy exists resolves to the copy (see :func:`_schema_gids`).

Which records an entry matches depends on the job (``mode``): ``"deleted"`` for undelete and
permanent delete, ``"live"`` otherwise.  For jobs, plain gids are taken in any state, so
that a selected record in the wrong state is reported as a failed item rather than silently
dropped; reads (``records/bulk/get``) pass ``reading=True`` and get plain gids in ``mode``'s
state only, like their other entries.  Unknown gids and gids of another project simply match
nothing.

**In slices** (:func:`resolve_in_slices`, what jobs and ``records/bulk/get`` use).  On SQLite
one write transaction holds the whole database, so a huge selection is not resolved in one.
Its statements (and the job's prepare step) run in a *read* transaction into a TEMP table
named ``job_item`` — on that connection it stands in for the real one, so the statements are
the same, and temp tables take no lock on the database file.  The rows are then copied into
the real ``job_item`` in id order, a slice per short write transaction (sized like a job's
batches, writers waiting their turn let in between), and the last slice's transaction runs
the caller's ``last`` step (a job: ``resolved``, ``total``, ``processing``).  A crash between
slices leaves a job unresolved with some of its rows copied: its next run deletes them (in
slices too) and resolves again.  A selection of a few plain gids (:data:`FEW_GIDS`) is
bounded by its size, as a batch is, and is resolved in one write transaction.  PostgreSQL
locks rows, not the database: there everything is one transaction, as :func:`resolve_into`
alone.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from typing import Literal

from sqlalchemy import Connection, Engine, text

from models import dialect
from models.engine import (
    FIRST_BATCH,
    in_slices,
    let_writers_in,
    next_batch_size,
    writers_file,
)
from models.records import deleted_sql, live_sql
from models.search.sql import resolve_search
from models.selection import Children, Entry, Failed, Gids, Kind, Search, Selection

Mode = Literal["live", "deleted"]

_STATUS = {"live": live_sql("r"), "deleted": deleted_sql("r")}


def resolve_into(
    conn: Connection, *, token: str, project_gid: str, selection: Selection, mode: Mode,
    reading: bool = False, count: bool = True,
) -> int:
    """Insert the selection's items into ``job_item`` for ``token``; returns how many
    (``count=False``: 0, not counted)."""
    orderings = _orderings(conn, project_gid, selection)
    for entry in _runs(selection.entries):
        _resolve(conn, token, project_gid, entry, selection.kind, mode, reading, orderings)
    return _count(conn, token) if count else 0


def resolve_counted(
    conn: Connection, *, token: str, project_gid: str, selection: Selection, mode: Mode,
) -> list[int]:
    """:func:`resolve_into` of a record selection, returning how many items each entry of
    the selection (each plain gid is one) added: an item that several entries match counts
    for the first of them."""
    orderings = _orderings(conn, project_gid, selection)
    counts: list[int] = []
    for entry in _runs(selection.entries):
        before = _last_id(conn, token)
        _resolve(conn, token, project_gid, entry, selection.kind, mode, False, orderings)
        if isinstance(entry, Gids):  # one statement for the run: told apart by gid
            added = set(conn.execute(text(
                "SELECT r.gid FROM job_item ji JOIN record r ON r.id = ji.item_id "
                "WHERE ji.job_token = :t AND ji.id > :before"), {"t": token, "before": before}
            ).scalars())
            for gid in entry.gids:
                counts.append(int(gid in added))
                added.discard(gid)
        elif isinstance(entry, list):  # a run of children entries: told apart by parent
            per_parent = dict(conn.execute(text(
                "SELECT p.gid, COUNT(*) FROM job_item ji JOIN record r ON r.id = ji.item_id "
                "JOIN record p ON p.id = r.parent_id WHERE ji.job_token = :t "
                "AND ji.id > :before GROUP BY p.gid"), {"t": token, "before": before}
            ).tuples().all())
            for child in entry:
                counts.append(int(per_parent.pop(child.parent, 0)))
        else:
            counts.append(int(conn.execute(text(
                "SELECT COUNT(*) FROM job_item WHERE job_token = :t AND id > :before"
            ), {"t": token, "before": before}).scalar_one()))
    return counts


def _resolve(
    conn: Connection, token: str, project_gid: str, entry: Entry | list[Children], kind: Kind,
    mode: Mode, reading: bool, orderings: dict[str, str],
) -> None:
    if isinstance(entry, Gids | Failed) and kind == "schema":
        _schema_gids(conn, token, project_gid, entry)
    elif isinstance(entry, Gids | Failed):
        _gids(conn, token, project_gid, entry, _STATUS[mode] if reading else None)
    elif isinstance(entry, list):
        _children(conn, token, project_gid, entry, mode, orderings)
    elif isinstance(entry, Search):
        resolve_search(conn, token=token, project_gid=project_gid, entry=entry,
                       kind=kind, mode=mode)


def _orderings(conn: Connection, project_gid: str, selection: Selection) -> dict[str, str]:
    """The project's channel orderings, which children entries may name (none else read)."""
    if not any(isinstance(entry, Children) for entry in selection.entries):
        return {}
    project = conn.execute(
        text("SELECT orderings FROM project WHERE gid = :p"), {"p": project_gid}
    ).first()
    return _json(project[0]) if project else {}


def _last_id(conn: Connection, token: str) -> int:
    return int(conn.execute(text(
        "SELECT COALESCE(MAX(id), 0) FROM job_item WHERE job_token = :t"), {"t": token}
    ).scalar_one())


def gid_rows(conn: Connection, entry: Gids | Failed) -> tuple[str, str, dict[str, str]]:
    """The gids of a plain-gid run, or the failed gids of a job (:class:`Failed`: its
    ``job_failure`` rows, one range of their ``(job_token, id)`` index), as rows ``j.value``
    ordered by ``j.key``; the join that takes the table looked up per gid (SQLite, left to
    itself, could drive a job's failures from the project's range of records; ``CROSS
    JOIN`` keeps it on the failures); the parameter they take."""
    if isinstance(entry, Failed):
        return ("(SELECT f.id AS key, f.gid AS value FROM job_failure f "
                "WHERE f.job_token = :failed_job) AS j",
                "JOIN" if dialect.is_pg(conn) else "CROSS JOIN", {"failed_job": entry.job})
    return dialect.json_rows(conn, "gids"), "JOIN", {"gids": json.dumps(entry.gids)}


def _gids(
    conn: Connection, token: str, project_gid: str, entry: Gids | Failed, status: str | None
) -> None:
    state = f" AND {status}" if status else ""
    rows, join, args = gid_rows(conn, entry)
    conn.execute(text(
        f"INSERT INTO job_item (job_token, item_id) "
        f"SELECT :tok, r.id FROM {rows} "
        f"{join} record r ON r.gid = j.value "
        f"WHERE r.project_gid = :proj{state} ORDER BY j.key "
        f"ON CONFLICT (job_token, item_id) DO NOTHING"
    ), {"tok": token, "proj": project_gid, **args})


def _schema_gids(conn: Connection, token: str, project_gid: str, entry: Gids | Failed
                 ) -> None:
    """Plain gids of schema items.  A committed item that has a working copy stands for that
    copy (the jobs act on "the" modified item, as Unicat's single-item endpoints do when given
    the original's gid); extended definitions are records' private copies, never a target."""
    rows, join, args = gid_rows(conn, entry)
    conn.execute(text(
        f"INSERT INTO job_item (job_token, item_id) "
        f"SELECT :tok, COALESCE(w.id, s.id) FROM {rows} "
        f"{join} schema_item s ON s.gid = j.value "
        f"LEFT JOIN schema_item w ON w.original = s.gid AND w.project_gid = :proj "
        f"AND w.is_working_copy = true AND w.is_extended = false "
        f"AND s.is_new = false AND s.is_working_copy = false "
        f"WHERE s.project_gid = :proj ORDER BY j.key, w.id "
        f"ON CONFLICT (job_token, item_id) DO NOTHING"
    ), {"tok": token, "proj": project_gid, **args})


def _runs(entries: tuple[Entry, ...]) -> list[Entry | list[Children]]:
    """Consecutive children entries with the same channel and ordering and no exclude are
    resolved together, in one statement, keeping their order (10,000 children entries are
    one ``INSERT … SELECT``, not 10,000)."""
    out: list[Entry | list[Children]] = []
    for entry in entries:
        if isinstance(entry, Children):
            last = out[-1] if out else None
            if (isinstance(last, list) and not entry.exclude and not last[-1].exclude
                    and (last[-1].channel, last[-1].ordering) == (entry.channel, entry.ordering)):
                last.append(entry)
            else:
                out.append([entry])
        else:
            out.append(entry)
    return out


def _children(
    conn: Connection, token: str, project_gid: str, entries: list[Children], mode: Mode,
    orderings: dict[str, str],
) -> None:
    """Children of each entry's parent, entry by entry (``j.key``), each in its order.  The
    entries share channel and ordering; only a lone entry carries an exclude."""
    first = entries[0]
    where = ["p.project_gid = :proj", "r.project_gid = :proj", _STATUS[mode]]
    params: dict[str, object] = {
        "tok": token, "proj": project_gid, "parents": json.dumps([e.parent for e in entries]),
    }
    if first.channel:
        where.append(dialect.json_array_has(conn, "r.channels", "channel"))
        params["channel"] = first.channel
    if first.exclude:
        where.append(f"r.gid NOT IN (SELECT x.value FROM {dialect.json_rows(conn, 'ex', 'x')})")
        params["ex"] = json.dumps(sorted(first.exclude))
    order = "j.key, r.id"
    # An ordering the project does not have orders nothing: creation order, as without one.
    if first.ordering and first.ordering in orderings:
        pos = dialect.json_int(conn, "r.orderings", "ordering")
        params["ordering"] = dialect.json_key_arg(conn, first.ordering)
        order = f"j.key, CASE WHEN {pos} IS NULL THEN 1 ELSE 0 END, {pos}, r.id"
    conn.execute(text(
        "INSERT INTO job_item (job_token, item_id) "
        f"SELECT :tok, r.id FROM {dialect.json_rows(conn, 'parents')} "
        "JOIN record p ON p.gid = j.value JOIN record r ON r.parent_id = p.id "
        f"WHERE {' AND '.join(where)} ORDER BY {order} "
        "ON CONFLICT (job_token, item_id) DO NOTHING"
    ), params)


def _json(value: object) -> dict[str, str]:
    if isinstance(value, str):
        return json.loads(value)
    return dict(value or {})  # type: ignore[call-overload]




#: Most ``job_item`` rows copied or deleted in one write transaction.
SLICE_LIMIT = 50_000
#: A selection of plain gids only, at most this many, is resolved in one write transaction:
#: it is bounded by its size (as a batch is), and small jobs skip the slicing's round trips.
FEW_GIDS = 1000

#: Called in the same transaction as the rows it follows (e.g. to check a job's lease).
Step = Callable[[Connection], None]


def resolve_in_slices(
    engine: Engine, *, token: str, project_gid: str, selection: Selection, mode: Mode,
    reading: bool = False, prepare: Callable[[Connection, str, str, Selection], None] | None = None,
    each: Step | None = None, last: Callable[[Connection, int], None] | None = None,
    limit: int = SLICE_LIMIT,
) -> int:
    """Replace ``token``'s ``job_item`` rows with the selection's items, then ``prepare`` them
    (a job's prepare step); returns how many there are.  ``each(conn)`` runs in every write
    transaction, ``last(conn, total)`` in the one that writes the last rows.  See the module
    docstring."""
    if writers_file(engine) is None or few_gids(selection):
        with engine.execution_options(writer=True).begin() as conn:
            total = resolve_in(conn, token=token, project_gid=project_gid,
                               selection=selection, mode=mode, reading=reading,
                               prepare=prepare)
            if each is not None:
                each(conn)
            if last is not None:
                last(conn, total)
        return total
    delete_items(engine, token, each=each, limit=limit)
    # A connection of its own, closed at the end: the TEMP table that stands in for
    # job_item must never outlive this function on a pooled connection.
    conn = engine.connect()
    try:
        with conn.begin():  # a read transaction: nothing here waits for the write lock
            _create_temp_items(conn, "job_item")
            conn.exec_driver_sql(_TEMP_UNIQUE)
            total = resolve_into(conn, token=token, project_gid=project_gid,
                                 selection=selection, mode=mode, reading=reading)
            if prepare is not None:
                prepare(conn, token, project_gid, selection)
                total = _count(conn, token)
        _copy_in_slices(conn, token, total, each=each, last=last, limit=limit)
        return total
    finally:
        conn.invalidate()  # closes the DBAPI connection, and the TEMP table with it
        conn.close()


def resolve_in(
    conn: Connection, *, token: str, project_gid: str, selection: Selection, mode: Mode,
    reading: bool = False, prepare: Callable[[Connection, str, str, Selection], None] | None = None,
    fresh: bool = False,
) -> int:
    """:func:`resolve_in_slices` in the caller's write transaction, for a selection bounded
    by its size (:func:`few_gids`) or on PostgreSQL: ``token``'s ``job_item`` rows replaced
    by the selection's items, then prepared; how many there are.  ``fresh``: the caller
    knows ``token`` has no rows yet (nothing to delete first)."""
    if not fresh:
        conn.execute(text("DELETE FROM job_item WHERE job_token = :t"), {"t": token})
    total = resolve_into(conn, token=token, project_gid=project_gid, selection=selection,
                         mode=mode, reading=reading, count=prepare is None)
    if prepare is not None:  # it may add items: counted after it
        prepare(conn, token, project_gid, selection)
        total = _count(conn, token)
    return total


#: The TEMP table that stands in for ``job_item`` while a big selection is resolved, and
#: its unique index (the ordered union's ``ON CONFLICT (job_token, item_id)``).
_TEMP_ITEMS = ("CREATE TEMP TABLE {} (id INTEGER PRIMARY KEY, job_token VARCHAR(36) NOT NULL, "
               "item_id INTEGER NOT NULL)")
_TEMP_UNIQUE = "CREATE UNIQUE INDEX temp.uq_job_item ON job_item (job_token, item_id)"


def _create_temp_items(conn: Connection, name: str) -> None:
    conn.exec_driver_sql(_TEMP_ITEMS.format(name))


def _temp_items(conn: Connection) -> bool:
    """Whether ``job_item`` is the TEMP stand-in on this connection (see the module
    docstring)."""
    return conn.dialect.name == "sqlite" and conn.exec_driver_sql(
        "SELECT 1 FROM sqlite_temp_master WHERE type = 'table' AND name = 'job_item'"
    ).first() is not None


def reorder_items(conn: Connection, token: str, order_by: str) -> None:
    """Renumber ``token``'s items that are records in the order ``order_by`` (SQL over
    ``j``, the item, and ``r``, its record); items that are not records go.

    On the TEMP stand-in the rows go, in order, into a new table that takes the old one's
    place, and the unique index is built once, after them: three passes over every row
    (insert, delete, update of each row and of both its index entries) become one and a
    sort.  On the real table the rows are renumbered in the caller's transaction."""
    select = ("SELECT {tok}, j.item_id FROM job_item j JOIN record r ON r.id = j.item_id "
              f"WHERE j.job_token = :tok ORDER BY {order_by}")
    if _temp_items(conn):
        _create_temp_items(conn, "job_item_order")
        conn.execute(text("INSERT INTO temp.job_item_order (job_token, item_id) "
                          + select.format(tok="j.job_token")), {"tok": token})
        conn.exec_driver_sql("DROP TABLE temp.job_item")
        conn.exec_driver_sql("ALTER TABLE temp.job_item_order RENAME TO job_item")
        conn.exec_driver_sql(_TEMP_UNIQUE)
        return
    if conn.dialect.name == "postgresql":
        # The order goes into an unlogged, unindexed TEMP table first; the job's rows are
        # then deleted and inserted once, in order (no third pass updating every row's
        # token, which on PostgreSQL writes a new version of each row and of its index
        # entries).
        conn.execute(text(
            "CREATE TEMP TABLE job_item_order ON COMMIT DROP AS SELECT row_number() OVER "
            f"(ORDER BY {order_by}) AS n, j.item_id FROM job_item j "
            "JOIN record r ON r.id = j.item_id WHERE j.job_token = :tok"), {"tok": token})
        conn.execute(text("DELETE FROM job_item WHERE job_token = :tok"), {"tok": token})
        conn.execute(text("INSERT INTO job_item (job_token, item_id) "
                          "SELECT :tok, item_id FROM job_item_order ORDER BY n"), {"tok": token})
        conn.execute(text("DROP TABLE job_item_order"))
        return
    tmp = str(uuid.uuid4())
    conn.execute(text("INSERT INTO job_item (job_token, item_id) " + select.format(tok=":tmp")),
                 {"tmp": tmp, "tok": token})
    conn.execute(text("DELETE FROM job_item WHERE job_token = :tok"), {"tok": token})
    conn.execute(text("UPDATE job_item SET job_token = :tok WHERE job_token = :tmp"),
                 {"tok": token, "tmp": tmp})


def _copy_in_slices(conn: Connection, token: str, total: int, *, each: Step | None,
                    last: Callable[[Connection, int], None] | None, limit: int) -> None:
    """Copy ``temp.job_item`` into ``main.job_item`` in id order, a slice per write
    transaction; ``last`` in the transaction of the last slice (an empty one if none)."""
    size, after, copied = min(FIRST_BATCH, limit), 0, 0
    while True:
        conn.execution_options(writer=True)
        try:
            with conn.begin():
                started = time.perf_counter()
                upto = conn.execute(text(
                    "SELECT MAX(id) FROM (SELECT id FROM temp.job_item WHERE id > :after "
                    "ORDER BY id LIMIT :n) AS s"), {"after": after, "n": size}).scalar()
                rows = 0
                if upto is not None:
                    rows = conn.execute(text(
                        "INSERT INTO main.job_item (job_token, item_id) "
                        # One rowid range per slice: the unary + keeps SQLite off the
                        # (job_token, item_id) index, which would scan and sort every row
                        # of the job for every slice.
                        "SELECT job_token, item_id FROM temp.job_item "
                        "WHERE id > :after AND id <= :upto AND +job_token = :tok ORDER BY id"
                    ), {"after": after, "upto": upto, "tok": token}).rowcount
                    after = upto
                copied += rows
                if each is not None:
                    each(conn)
                done = upto is None or copied >= total
                if done and last is not None:
                    last(conn, total)
            seconds = time.perf_counter() - started
        finally:
            conn.execution_options(writer=False)
        if done:
            return
        size = next_batch_size(size, seconds, limit=limit)
        let_writers_in(conn.engine)


#: A finished job with at most this many items has them deleted in the transaction of its
#: terminal state (:func:`delete_few_items`) rather than in slices after it.
FEW_ITEMS = 1000


def delete_few_items(conn: Connection, token: str) -> int:
    """Delete ``token``'s ``job_item`` rows in the caller's transaction, in one statement (a
    job known to have at most :data:`FEW_ITEMS`, or PostgreSQL); returns how many."""
    return int(conn.execute(text("DELETE FROM job_item WHERE job_token = :t"),
                            {"t": token}).rowcount)


def delete_items(engine: Engine, token: str, *, each: Step | None = None,
                 limit: int = SLICE_LIMIT) -> int:
    """Delete ``token``'s ``job_item`` rows, a slice per write transaction on SQLite (one
    statement on PostgreSQL); returns how many.  ``each(conn)`` runs in every transaction."""
    if writers_file(engine) is None:
        with engine.execution_options(writer=True).begin() as conn:
            if each is not None:
                each(conn)
            return delete_few_items(conn, token)

    def step(conn: Connection, n: int) -> int:
        if each is not None:
            each(conn)
        return int(conn.execute(text(
            "DELETE FROM job_item WHERE id IN (SELECT id FROM job_item WHERE job_token = :t "
            "ORDER BY id LIMIT :n)"), {"t": token, "n": n}).rowcount)

    return in_slices(engine, step, limit=limit)


def few_gids(selection: Selection) -> bool:
    """Plain gids only, at most :data:`FEW_GIDS` of them."""
    gids = 0
    for entry in selection.entries:
        if not isinstance(entry, Gids):
            return False
        gids += len(entry.gids)
    return gids <= FEW_GIDS


def _count(conn: Connection, token: str) -> int:
    return int(conn.execute(
        text("SELECT COUNT(*) FROM job_item WHERE job_token = :t"), {"t": token}
    ).scalar_one())
