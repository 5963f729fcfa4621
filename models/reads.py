"""Paged reads over a selection (``records/bulk/get``).

The first page resolves the whole selection once into ``job_item`` rows under a read token
(``get-<hex seconds>-<random>``), exactly as a job would (live records for children and
search entries); the page cursor carries that token and a position, so each further page is
one indexed range read, whatever the selection's size.  A cursor therefore pages through the
selection as it was when the first page was asked for (the records' content is current).
Read tokens older than ``KEEP_SECONDS`` are dropped when a new one is made; a cursor that
outlived its token answers a 1006 error ("page.cursor expired"), and the client starts over.

A read token belongs to the project and the user it was made for (a ``read_token`` row): a
cursor is honoured only on that project's route and for that user, and answers exactly as an
expired one otherwise, so a cursor handed to, or kept by, anyone else reads nothing and tells
nothing.  (Membership itself is the route's check, made on every page.)

The route calls :func:`read_page`: on SQLite, the first page's resolution and the dropping of
old read tokens run in slices of short write transactions (:func:`models.resolve.
resolve_in_slices`), so a read of a huge selection never holds the database's write lock for
long; a cursor page is a read transaction.  :func:`page` does the same inside one given
transaction.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

from sqlalchemy import Connection, Engine, text

from bulkjobs import cursors
from bulkjobs.errors import SelectionError
from models import dialect
from models.engine import in_slices, writers_file
from models.records import live_sql
from models.resolve import SLICE_LIMIT, resolve_in_slices, resolve_into
from models.selection import Selection

KEEP_SECONDS = 900
EXPIRED = "page.cursor expired; start again without it"


@dataclass(frozen=True, slots=True)
class Page:
    ids: list[int]  # record ids of this page, in selection order
    total: int  # items in the whole selection
    cursor: str | None  # null at the end


def _token(now: float) -> str:
    return f"get-{int(now):08x}-{uuid.uuid4().hex[:20]}"


def _encode(token: str, position: int, total: int) -> str:
    return cursors.encode([token, position, total])


def _decode(cursor: str) -> tuple[str, int, int]:
    token, position, total = cursors.decode(cursor, (str, int, int), error=SelectionError)
    if not (token.startswith("get-") and len(token) <= 36
            and 0 <= position < 2**63 and 0 <= total < 2**63):  # SQL BIGINT range
        raise SelectionError(cursors.INVALID)
    return token, position, total


def read_page(
    engine: Engine, *, project_gid: str, user_gid: str, selection: Selection,
    cursor: str | None, size: int,
) -> Page:
    """One page of the selection's records, as :func:`page`, in transactions of its own (see
    the module docstring)."""
    if cursor is None:
        now = time.time()
        token = _token(now)
        with engine.execution_options(writer=True).begin() as conn:
            # The old owners go first: a token whose items are half dropped is unknown.
            conn.execute(text("DELETE FROM read_token WHERE token < :old"), _old(now))
            _own(conn, token, project_gid=project_gid, user_gid=user_gid)
        _drop_old_tokens(engine, now)
        total = resolve_in_slices(engine, token=token, project_gid=project_gid,
                                  selection=selection, mode="live", reading=True)
        cursor = _encode(token, 0, total)  # the first page, read as a next one
    with engine.connect() as conn:
        result = page(conn, project_gid=project_gid, user_gid=user_gid, selection=selection,
                      cursor=cursor, size=size)
        conn.rollback()
    return result


def _own(conn: Connection, token: str, *, project_gid: str, user_gid: str) -> None:
    conn.execute(text("INSERT INTO read_token (token, project_gid, user_gid) "
                      "VALUES (:t, :p, :u)"), {"t": token, "p": project_gid, "u": user_gid})


def _check_owner(conn: Connection, token: str, *, project_gid: str, user_gid: str) -> None:
    """:class:`SelectionError` "expired" unless ``token`` was made for this project and user
    (an unknown, dropped or foreign token: one answer, which tells nothing)."""
    row = conn.execute(text("SELECT project_gid, user_gid FROM read_token WHERE token = :t"),
                       {"t": token}).first()
    if row is None or (row[0], row[1]) != (project_gid, user_gid):
        raise SelectionError(EXPIRED)


def _old(now: float) -> dict[str, str]:
    """The bound below which read tokens are older than ``KEEP_SECONDS``."""
    return {"old": f"get-{int(now - KEEP_SECONDS):08x}"}


def _drop_old_tokens(engine: Engine, now: float) -> None:
    old = _old(now)
    if writers_file(engine) is None:
        with engine.execution_options(writer=True).begin() as conn:
            conn.execute(text("DELETE FROM job_item WHERE job_token LIKE 'get-%' "
                              "AND job_token < :old"), old)
        return

    def step(conn: Connection, n: int) -> int:
        return int(conn.execute(text(
            "DELETE FROM job_item WHERE id IN (SELECT id FROM job_item "
            "WHERE job_token LIKE 'get-%' AND job_token < :old LIMIT :n)"),
            {**old, "n": n}).rowcount)

    in_slices(engine, step, limit=SLICE_LIMIT)


def page(
    conn: Connection, *, project_gid: str, user_gid: str, selection: Selection,
    cursor: str | None, size: int,
) -> Page:
    """One page of the selection's records for ``user_gid`` on ``project_gid``'s route; call
    inside a writing transaction (a reading one will do with a ``cursor``).  A cursor made
    for another project or user answers as an expired one."""
    if cursor is None:
        now = time.time()
        old = _old(now)
        conn.execute(text("DELETE FROM read_token WHERE token < :old"), old)
        # One range of the token index: read tokens sort after every job's (a uuid's
        # first character is a hex digit, below "g").
        conn.execute(text("DELETE FROM job_item WHERE job_token >= 'get-' "
                          "AND job_token < :old"), old)
        token = _token(now)
        _own(conn, token, project_gid=project_gid, user_gid=user_gid)
        total = resolve_into(conn, token=token, project_gid=project_gid, selection=selection,
                             mode="live", reading=True)
        position = 0
    else:
        token, position, total = _decode(cursor)
        _check_owner(conn, token, project_gid=project_gid, user_gid=user_gid)
    rows = conn.execute(text(
        "SELECT j.id, j.item_id FROM job_item j WHERE j.job_token = :t AND j.id > :p "
        "ORDER BY j.id LIMIT :n"
    ), {"t": token, "p": position, "n": size + 1}).all()
    if cursor is not None and not rows and position == 0 and total:
        raise SelectionError(EXPIRED)
    more = len(rows) > size
    rows = rows[:size]
    next_cursor = _encode(token, rows[-1][0], total) if more and rows else None
    return Page([int(r[1]) for r in rows], total, next_cursor)


def children_page(
    conn: Connection, *, parent_id: int, channel: str | None, ordering: str | None,
    orderings: dict[str, str], top: int, size: int,
) -> tuple[list[int], int]:
    """Ids of one page of a record's live children, and how many there are: enabled in
    ``channel`` if given, in ``ordering``'s positions if the project has that ordering
    (children without a position last), else in creation order — all in SQL."""
    where = ["r.parent_id = :pid", live_sql("r")]
    params: dict[str, object] = {"pid": parent_id, "n": size, "top": top}
    if channel:
        where.append(dialect.json_array_has(conn, "r.channels", "channel"))
        params["channel"] = channel
    order = "r.id"
    if ordering and ordering in orderings:
        pos = dialect.json_int(conn, "r.orderings", "ordering")
        params["ordering"] = dialect.json_key_arg(conn, ordering)
        order = f"CASE WHEN {pos} IS NULL THEN 1 ELSE 0 END, {pos}, r.id"
    body = f"FROM record r WHERE {' AND '.join(where)}"
    ids = [int(i) for i in conn.execute(text(
        f"SELECT r.id {body} ORDER BY {order} LIMIT :n OFFSET :top"), params).scalars()]
    total = int(conn.execute(text(f"SELECT COUNT(*) {body}"), params).scalar_one())
    return ids, total
