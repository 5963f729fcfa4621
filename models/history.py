"""Writing a record's history: versions and workflow entries, set-based.

* :func:`write_versions` snapshots the current content of a set of records as each one's
  next version (number = previous + 1, ``is_current``), in two statements whatever the set's
  size.  Every create and update of a record goes through it.
* :func:`write_workflow` adds one workflow entry per record (publish, unpublish, delete,
  undelete, …); ``state_sql`` is evaluated per row, so the entry can record the state the
  operation left the record in.
* :func:`mark_published` makes each record's current version its published one.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, text

from models.dialect import ids_param, is_pg


def version_id() -> str:
    """An RFC 4122 UUID in URL-safe base64 without padding (22 characters), as DatoCMS."""
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()



def snapshot_sql(conn: Connection, alias: str = "r") -> str:
    """SQL building a version snapshot (title, fields, definition, channels, status) from a
    record row; a deleted record's snapshot has the status it returns to (deletion is kept
    out of the row, see :mod:`models.records`)."""
    status = f"{alias}.status"
    if is_pg(conn):
        return (f"json_build_object('title', {alias}.title, 'fields', {alias}.fields, "
                f"'definition', {alias}.definition, 'channels', {alias}.channels, "
                f"'status', {status})")
    return (f"json_object('title', json({alias}.title), 'fields', json({alias}.fields), "
            f"'definition', {alias}.definition, 'channels', json({alias}.channels), "
            f"'status', {status})")


def write_versions(
    conn: Connection, ids: Sequence[int], *, editor: dict[str, Any], comment: str, now: float,
) -> dict[int, str]:
    """Snapshot each record as its next version; returns record id → new version id."""
    if not ids:
        return {}
    pairs = {rid: version_id() for rid in ids}
    conn.execute(ids_param(conn,
        "UPDATE record_version SET is_current = false WHERE record_id IN :ids AND is_current"
    ), {"ids": list(pairs)})
    conn.execute(text(
        "INSERT INTO record_version (id, record_id, number, created_at, editor, comment, "
        "snapshot, is_published, is_current) "
        f"SELECT CAST(json_extract_pair.vid AS TEXT), r.id, "
        "COALESCE((SELECT MAX(v.number) FROM record_version v WHERE v.record_id = r.id), -1) + 1,"
        f" :now, :editor, :comment, {snapshot_sql(conn)}, false, true "
        f"FROM {_pairs(conn)} JOIN record r ON r.id = json_extract_pair.rid"
    ), {"pairs": json.dumps([[rid, vid] for rid, vid in pairs.items()]), "now": now,
        "editor": json.dumps(editor), "comment": comment})
    return pairs


def _pairs(conn: Connection, second: str = "vid") -> str:
    """The parameter ``:pairs``, ``[[record id, text], …]``, as rows
    ``json_extract_pair(rid, <second>)``."""
    if is_pg(conn):
        return (f"(SELECT CAST(p->>0 AS INTEGER) AS rid, p->>1 AS {second} "
                "FROM jsonb_array_elements(CAST(:pairs AS jsonb)) AS p) AS json_extract_pair")
    return (f"(SELECT json_extract(value, '$[0]') AS rid, json_extract(value, '$[1]') AS {second} "
            "FROM json_each(:pairs)) AS json_extract_pair")


def mark_published(conn: Connection, ids: Sequence[int]) -> None:
    """The current version of each record becomes its (only) published version."""
    if not ids:
        return
    conn.execute(ids_param(conn,
        "UPDATE record_version SET is_published = is_current WHERE record_id IN :ids "
        "AND (is_published OR is_current)"
    ), {"ids": list(ids)})


def clear_published(conn: Connection, ids: Sequence[int]) -> None:
    if not ids:
        return
    conn.execute(ids_param(conn,
        "UPDATE record_version SET is_published = false WHERE record_id IN :ids AND is_published"
    ), {"ids": list(ids)})


def write_workflow(
    conn: Connection, ids: Sequence[int], *, action: str, actor: dict[str, Any], now: float,
    comment: str = "", state_sql: str = "record.status",
    states: Mapping[int, str] | None = None, job_token: str | None = None,
) -> None:
    """One workflow entry per record; ``state_sql`` gives its ``review_state``, or
    ``states`` (record id → review state) when the caller has them already, and the record
    rows are then not read again.  ``job_token`` names the bulk job writing the entries
    (``None`` for a single-record edit)."""
    if not ids:
        return
    if states is not None:
        conn.execute(text(
            "INSERT INTO workflow_entry (record_id, action, review_state, actor, time, comment, "
            "job_token) SELECT rid, :action, state, :actor, :now, :comment, :job_token "
            f"FROM {_pairs(conn, 'state')}"
        ), {"pairs": json.dumps([[i, states[i]] for i in ids]), "action": action,
            "actor": json.dumps(actor), "now": now, "comment": comment, "job_token": job_token})
        return
    conn.execute(ids_param(conn,
        "INSERT INTO workflow_entry (record_id, action, review_state, actor, time, comment, "
        f"job_token) SELECT record.id, :action, {state_sql}, :actor, :now, :comment, "
        ":job_token FROM record WHERE record.id IN :ids"
    ), {"ids": list(ids), "action": action, "actor": json.dumps(actor), "now": now,
        "comment": comment, "job_token": job_token})


__all__ = ["clear_published", "mark_published", "snapshot_sql", "version_id",
           "write_versions", "write_workflow"]
