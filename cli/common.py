"""What every command shares: the stderr console, the schema check, the acting user and the
table / ``--json`` output on stdout."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING

import typer
from rich.console import Console

if TYPE_CHECKING:
    from models.auth import User

err = Console(stderr=True)

#: Columns printed whole, whatever the terminal's width.
WHOLE = frozenset({"token", "gid", "id", "project"})
JSON_OPTION = typer.Option("--json", help="print one JSON array")


def ready() -> None:
    """Create or upgrade the schema: every command migrates first, so each works on an empty
    database."""
    from models.engine import migrate

    migrate()


def acting_user(username: str | None) -> User:
    """The named user, or the first ops user: the CLI acts as a local operator."""
    from sqlalchemy import select
    from sqlmodel import Session, col

    from models import User
    from models.engine import get_engine

    with Session(get_engine()) as session:
        query = select(User).where(col(User.username) == username) if username else (
            select(User).where(col(User.ops).is_(True)).order_by(col(User.username)))
        user = session.execute(query).scalars().first()
    if user is None:
        err.print(f"[red]no user {username!r}" if username else "[red]no ops user; seed first")
        raise typer.Exit(1)
    return user


def print_rows(columns: list[str], rows: list[list[object]], as_json: bool) -> None:
    """Rows on stdout: a table, or with ``--json`` one JSON array of objects keyed by column.
    Tokens, gids and ids are never cut: their columns keep their width, the others give way
    (``--json`` for narrow terminals)."""
    if as_json:
        sys.stdout.write(json.dumps([dict(zip(columns, row, strict=True)) for row in rows]) + "\n")
        return
    from rich.table import Table

    table = Table(*columns)
    for column, name in zip(table.columns, columns, strict=True):
        if name in WHOLE:
            column.no_wrap, column.overflow = True, "ignore"
            column.min_width = max([len(str(row[columns.index(name)])) for row in rows] + [1])
    for row in rows:
        table.add_row(*(cell(v) for v in row))
    Console().print(table)


def cell(value: object) -> str:
    """A table cell: ``yes`` or empty for a flag, empty for nothing."""
    if isinstance(value, bool):
        return "yes" if value else ""
    return "" if value is None else str(value)


def when(seconds: float) -> str:
    from datetime import datetime

    return datetime.fromtimestamp(seconds).isoformat(timespec="seconds")
