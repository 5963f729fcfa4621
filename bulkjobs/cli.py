"""The ``bulkjobs`` command line (typer).  Every command migrates the schema first, so each
works on an empty database."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

app = typer.Typer(help="bulkjobs: bulk content jobs with a live, resumable event stream.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
err = Console(stderr=True)


def _ready() -> None:
    from models.engine import migrate

    migrate()


@app.command()
def migrate() -> None:
    """Create or upgrade the database schema."""
    _ready()
    err.print("[green]schema is up to date")


@app.command()
def seed(
    records: Annotated[int, typer.Option(help="records per project")] = 1000,
    projects: Annotated[int, typer.Option(help="number of projects")] = 1,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
    deleted_every: Annotated[int, typer.Option(help="soft-delete every n-th subtree")] = 10,
) -> None:
    """Create demo users, projects, API keys, schema items and a record tree."""
    from models.engine import get_write_engine
    from models.seed import seed as run_seed

    _ready()
    total = records * projects
    with Progress(TextColumn("seeding"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err, transient=as_json) as bar:
        task = bar.add_task("records", total=total)
        done_before = [0]

        def tick(written: int) -> None:
            bar.update(task, completed=done_before[0] + written)
            if written >= records:
                done_before[0] += written

        with get_write_engine().begin() as conn:
            result = run_seed(conn, records=records, projects=projects, progress=tick,
                              deleted_every=deleted_every)
    if as_json:
        sys.stdout.write(json.dumps(result.as_json()) + "\n")
        return
    for p in result.projects:
        err.print(f"project [bold]{p.gid}[/] root {p.root} api_key {p.api_key}")
    for u in result.users:
        err.print(f"user [bold]{u.username}[/] password {u.password} ops={u.ops}")


@app.command()
def token(
    username: Annotated[str, typer.Option(help="user name")],
    ttl: Annotated[int | None, typer.Option(help="lifetime in seconds")] = None,
) -> None:
    """Print a JWT for a user."""
    from sqlalchemy import select
    from sqlmodel import Session

    from bulkjobs.tokens import issue
    from models import User
    from models.engine import get_engine

    _ready()
    with Session(get_engine()) as session:
        user = session.exec(select(User).where(User.username == username)).scalar_one_or_none()
    if user is None:
        err.print(f"[red]no user named {username!r}")
        raise typer.Exit(1)
    print(issue(user.gid, ops=user.ops, ttl=ttl))


if __name__ == "__main__":
    app()
