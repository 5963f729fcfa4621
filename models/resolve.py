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
"""

from __future__ import annotations

import json
from typing import Literal

from sqlalchemy import Connection, text

from models import dialect
from models.records import deleted_sql, live_sql
from models.search.sql import resolve_search
from models.selection import Children, Entry, Gids, Search, Selection

Mode = Literal["live", "deleted"]

_STATUS = {"live": live_sql("r"), "deleted": deleted_sql("r")}


def resolve_into(
    conn: Connection, *, token: str, project_gid: str, selection: Selection, mode: Mode,
    reading: bool = False,
) -> int:
    """Insert the selection's items into ``job_item`` for ``token``; returns how many."""
    project = conn.execute(
        text("SELECT orderings FROM project WHERE gid = :p"), {"p": project_gid}
    ).first()
    orderings = _json(project[0]) if project else {}
    for entry in _runs(selection.entries):
        if isinstance(entry, Gids) and selection.kind == "schema":
            _schema_gids(conn, token, project_gid, entry)
        elif isinstance(entry, Gids):
            _gids(conn, token, project_gid, entry, _STATUS[mode] if reading else None)
        elif isinstance(entry, list):
            _children(conn, token, project_gid, entry, mode, orderings)
        elif isinstance(entry, Search):
            resolve_search(conn, token=token, project_gid=project_gid, entry=entry,
                           kind=selection.kind, mode=mode)
    return int(conn.execute(
        text("SELECT COUNT(*) FROM job_item WHERE job_token = :t"), {"t": token}
    ).scalar_one())


def _gids(
    conn: Connection, token: str, project_gid: str, entry: Gids, status: str | None
) -> None:
    state = f" AND {status}" if status else ""
    conn.execute(text(
        f"INSERT INTO job_item (job_token, item_id) "
        f"SELECT :tok, r.id FROM {dialect.json_rows(conn, 'gids')} "
        f"JOIN record r ON r.gid = j.value "
        f"WHERE r.project_gid = :proj{state} ORDER BY j.key "
        f"ON CONFLICT (job_token, item_id) DO NOTHING"
    ), {"tok": token, "proj": project_gid, "gids": json.dumps(entry.gids)})


def _schema_gids(conn: Connection, token: str, project_gid: str, entry: Gids) -> None:
    """Plain gids of schema items.  A committed item that has a working copy stands for that
    copy (the jobs act on "the" modified item, as Unicat's single-item endpoints do when given
    the original's gid); extended definitions are records' private copies, never a target."""
    conn.execute(text(
        f"INSERT INTO job_item (job_token, item_id) "
        f"SELECT :tok, COALESCE(w.id, s.id) FROM {dialect.json_rows(conn, 'gids')} "
        f"JOIN schema_item s ON s.gid = j.value "
        f"LEFT JOIN schema_item w ON w.original = s.gid AND w.project_gid = :proj "
        f"AND w.is_working_copy = true AND w.is_extended = false "
        f"AND s.is_new = false AND s.is_working_copy = false "
        f"WHERE s.project_gid = :proj ORDER BY j.key, w.id "
        f"ON CONFLICT (job_token, item_id) DO NOTHING"
    ), {"tok": token, "proj": project_gid, "gids": json.dumps(entry.gids)})


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


