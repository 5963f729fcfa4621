"""The few SQL fragments that differ between SQLite and PostgreSQL.

Everything else is written once.  Each function returns text for ``sqlalchemy.text`` with
named parameters; JSON parameters are passed as JSON text.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from sqlalchemy import Connection, bindparam, text


def is_pg(conn: Connection) -> bool:
    return conn.dialect.name == "postgresql"


def json_rows(conn: Connection, param: str, alias: str = "j") -> str:
    """A JSON array parameter as rows ``<alias>.value`` (text) ordered by ``<alias>.key``."""
    if is_pg(conn):
        return (f"jsonb_array_elements_text(CAST(:{param} AS jsonb)) "
                f"WITH ORDINALITY AS {alias}(value, key)")
    return f"json_each(:{param}) AS {alias}"


def json_array_has(conn: Connection, column: str, param: str) -> str:
    """True when the JSON array in ``column`` contains the string parameter."""
    if is_pg(conn):
        return f"jsonb_exists(CAST({column} AS jsonb), :{param})"
    return f"EXISTS (SELECT 1 FROM json_each({column}) AS jc WHERE jc.value = :{param})"


def json_int(conn: Connection, column: str, param: str) -> str:
    """The integer under the key given by a parameter in the JSON object ``column``.

    On SQLite the parameter must hold a JSON path (``$."<key>"``); see :func:`json_key_arg`.
    """
    if is_pg(conn):
        return f"CAST(CAST({column} AS jsonb) ->> :{param} AS INTEGER)"
    return f"json_extract({column}, :{param})"


def json_key_arg(conn: Connection, key: str) -> str:
    """The parameter value :func:`json_int` expects for ``key``."""
    return key if is_pg(conn) else '$."' + key.replace('"', "") + '"'


def id_rows(conn: Connection, param: str, alias: str = "j") -> str:
    """A JSON array of integers (see :func:`json_ids`) as rows ``<alias>.value`` (integer):
    any number of ids as one parameter, where an expanding ``IN`` would hit SQLite's
    variable limit."""
    if is_pg(conn):
        return (f"(SELECT CAST(value AS INTEGER) AS value "
                f"FROM jsonb_array_elements_text(CAST(:{param} AS jsonb))) AS {alias}")
    return f"json_each(:{param}) AS {alias}"


def joined(conn: Connection, column: str) -> str:
    """An aggregate of ``column`` over the rows as one text, joined by single spaces (NULL
    without rows; the order is the rows' order in the plan)."""
    if is_pg(conn):
        return f"string_agg({column}, ' ')"
    return f"group_concat({column}, ' ')"


def json_ids(ids: Iterable[int]) -> str:
    """The parameter value :func:`id_rows` expects."""
    if isinstance(ids, list) and all(type(i) is int for i in ids):
        return json.dumps(ids, separators=(",", ":"))  # C speed: batches pass 100,000 ids
    return "[" + ",".join(str(int(i)) for i in ids) + "]"


def ids_param(conn: Connection, sql: str) -> Any:
    """``text(sql)`` whose ``IN :ids`` takes a list of ids.  On PostgreSQL the list goes as
    one array parameter (``= ANY(:ids)``): a short statement that psycopg converts once and
    caches, whatever the number of ids.  On SQLite it is expanded, one placeholder per id."""
    if is_pg(conn):
        return text(sql.replace(" IN :ids", " = ANY(:ids)"))
    return text(sql).bindparams(bindparam("ids", expanding=True))
