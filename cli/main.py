"""The ``bulkjobs`` command line (typer): the app, its log set-up, the schema and demo-data
commands, and the command groups of :mod:`cli.jobs` (with :mod:`cli.job_detail`),
:mod:`cli.webhooks`, :mod:`cli.records`, :mod:`cli.accounts` and :mod:`cli.ops`.
Every command migrates the schema first, so each works on an empty database."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from cli import accounts, job_detail, jobs, ops, records, webhooks
from cli.common import err, ready

app = typer.Typer(help="bulkjobs: bulk content jobs with a live, resumable event stream.",
                  no_args_is_help=True, pretty_exceptions_enable=False)


@app.callback()
def main() -> None:
    """Log set-up for every command: LOG_FORMAT applies; the level is WARNING unless LOG_LEVEL
    is set, so that commands print their own output and nothing else."""
    from bulkjobs import logs
    from bulkjobs.settings import settings_or_exit

    settings = settings_or_exit()
    logs.setup(level=None if "log_level" in settings.model_fields_set else "WARNING")


@app.command()
def migrate() -> None:
    """Create or upgrade the database schema."""
    ready()
    err.print("[green]schema is up to date")


@app.command()
def seed(
    records: Annotated[int, typer.Option(help="records per project")] = 1000,
    projects: Annotated[int, typer.Option(help="number of projects")] = 1,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
    deleted_every: Annotated[int, typer.Option(help="soft-delete every n-th subtree")] = 10,
    marker_every: Annotated[int, typer.Option(
        help="the search marker word in every n-th record's text (1: every record)")] = 9,
) -> None:
    """Create demo users, projects, API keys, schema items and a record tree."""
    from models.engine import get_write_engine
    from models.seed import seed as run_seed

    ready()
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
                              deleted_every=deleted_every, marker_every=marker_every)
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
    from sqlmodel import Session, col

    from bulkjobs.tokens import issue
    from models import User
    from models.engine import get_engine

    ready()
    with Session(get_engine()) as session:
        user = session.execute(
            select(User).where(col(User.username) == username)).scalar_one_or_none()
    if user is None or user.disabled:
        err.print(f"[red]no user named {username!r}" if user is None
                  else f"[red]user {username!r} is disabled")
        raise typer.Exit(1)
    # A new session: it ends SESSION_MAX_AGE from now at the latest, whatever --ttl says.
    print(issue(user.gid, ops=user.ops, ttl=ttl, ver=user.token_version))


# Commands first, then groups: the order ``bulkjobs --help`` lists them in.
app.command()(jobs.submit)
app.command()(jobs.watch)
app.command()(ops.stats)
jobs.jobs_app.command("show")(job_detail.show)
app.add_typer(jobs.jobs_app, name="jobs")
app.add_typer(webhooks.webhooks_app, name="webhooks")
app.add_typer(records.records_app, name="records")
app.add_typer(accounts.users_app, name="users")
app.add_typer(accounts.apikeys_app, name="apikeys")


if __name__ == "__main__":
    app()
