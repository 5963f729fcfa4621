"""What every command shares: the stderr console, the schema check, the acting user and the
table / ``--json`` output on stdout."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

if TYPE_CHECKING:
    from bulkjobs.errors import BulkJobsError
    from models.auth import User

err = Console(stderr=True)

#: Columns printed whole, whatever the terminal's width.
WHOLE = frozenset({"token", "gid", "id", "project", "delivery"})
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


def known_project(project: str) -> None:
    """Raise :class:`~bulkjobs.errors.NotFound` for a project that does not exist."""
    from sqlmodel import Session

    from bulkjobs.errors import NotFound
    from models.auth import Project
    from models.engine import get_engine

    with Session(get_engine()) as session:
        if session.get(Project, project) is None:
            raise NotFound(f"no project {project!r}", info={"project": project})


def require_project(user: User, project: str, *, owner: bool = False) -> None:
    """Raise :class:`~bulkjobs.errors.NotFound` for a project that does not exist, and
    :class:`~bulkjobs.errors.Forbidden` unless ``user`` may act on ``project`` (as one of
    its owners, with ``owner``; ops users may always)."""
    from sqlmodel import Session

    from models.accounts import require_member, require_owner, session_claims
    from models.engine import get_engine

    known_project(project)
    with Session(get_engine()) as session:
        claims = session_claims(user)
        require_member(session, claims, project)
        if owner:
            require_owner(session, claims, project)


def job_project(token: str) -> str:
    """The project of job ``token``; exit 1 when there is no such job."""
    from sqlalchemy import select
    from sqlmodel import col

    from models import Job
    from models.engine import get_engine

    with get_engine().connect() as conn:
        project = conn.execute(select(col(Job.project_gid))
                               .where(col(Job.token) == token)).scalar()
    if project is None:
        err.print(f"[red]no job {escape(token)}")
        raise typer.Exit(1)
    return str(project)


def refuse(exc: BulkJobsError, code: int) -> NoReturn:
    """Print a product error (its message, and its details as JSON) and exit with ``code``."""
    details = f" {json.dumps(exc.info)}" if exc.info else ""
    err.print(f"[red]{escape(exc.message + details)}")
    raise typer.Exit(code)


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
    console_at_least(sum(c.min_width or 1 for c in table.columns) + 3 * len(columns) + 1
                     ).print(table)


def console_at_least(width: int) -> Console:
    """A stdout console at least ``width`` wide: a table narrower than its whole columns
    would cut them, so on a narrow terminal it keeps the width they need and the terminal
    wraps its lines instead."""
    console = Console()
    return console if console.width >= width else Console(width=width)


def cell(value: object) -> str:
    """A table cell: ``yes`` or empty for a flag, empty for nothing, a list's items joined
    by commas."""
    if isinstance(value, bool):
        return "yes" if value else ""
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value)
    return "" if value is None else str(value)


def when(seconds: float) -> str:
    from datetime import datetime

    return datetime.fromtimestamp(seconds).isoformat(timespec="seconds")
