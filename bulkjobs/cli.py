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


jobs_app = typer.Typer(help="List and cancel jobs.", no_args_is_help=True)
app.add_typer(jobs_app, name="jobs")


def _user(username: str | None):  # type: ignore[no-untyped-def]
    """The named user, or the first ops user: the CLI acts as a local operator."""
    from sqlalchemy import select
    from sqlmodel import Session

    from models import User
    from models.engine import get_engine

    with Session(get_engine()) as session:
        query = select(User).where(User.username == username) if username else (
            select(User).where(User.ops.is_(True)).order_by(User.username))
        user = session.execute(query).scalars().first()
    if user is None:
        err.print(f"[red]no user {username!r}" if username else "[red]no ops user; seed first")
        raise typer.Exit(1)
    return user


def _stream_url() -> str:
    from bulkjobs.settings import get_settings

    return f"ws://127.0.0.1:{get_settings().stream_port}/sync"


def _watch(token: str, username: str | None, url: str | None) -> None:
    from bulkjobs.tokens import issue
    from bulkjobs.watching import run_watch

    user = _user(username)
    try:
        final = run_watch(token, url=url or _stream_url(), jwt=issue(user.gid, ops=user.ops),
                          console=err)
    except LookupError:
        err.print(f"[red]no job {token}")
        raise typer.Exit(1) from None
    err.print(f"job {token}: [bold]{final.status}[/] {json.dumps(final.info)}")
    raise typer.Exit(0 if final.status == "done" else 1)


@app.command()
def submit(
    job: Annotated[str, typer.Argument(help="job name, e.g. bulk_delete_records")],
    project: Annotated[str, typer.Option(help="project gid")],
    selection: Annotated[str, typer.Option(help="the selection as JSON")],
    watch: Annotated[bool, typer.Option("--watch", help="follow it with a progress bar")] = False,
    username: Annotated[str | None, typer.Option(help="act as this user")] = None,
    stream_url: Annotated[str | None, typer.Option(help="ws://host:port/sync")] = None,
) -> None:
    """Queue a job and print its token."""
    from bulkjobs.connections import get_synclog
    from bulkjobs.errors import BulkJobsError
    from worker.app import enqueue
    from worker.submit import submit as queue_job

    _ready()
    try:
        parsed = json.loads(selection)
    except ValueError as exc:
        err.print(f"[red]--selection is not JSON: {exc}")
        raise typer.Exit(2) from None
    user = _user(username)
    try:
        token = queue_job(project_gid=project, job=job, params={"selection": parsed},
                          actor={"type": "user", "id": user.gid}, log=get_synclog(),
                          enqueue=enqueue)
    except BulkJobsError as exc:
        err.print(f"[red]{exc.message} {json.dumps(exc.info) if exc.info else ''}")
        raise typer.Exit(2) from None
    print(token)
    if watch:
        _watch(token, username, stream_url)


@app.command()
def watch(
    token: Annotated[str, typer.Argument(help="the job token")],
    username: Annotated[str | None, typer.Option(help="watch as this user")] = None,
    stream_url: Annotated[str | None, typer.Option(help="ws://host:port/sync")] = None,
) -> None:
    """Follow a job live over the websocket stream until it ends."""
    _ready()
    _watch(token, username, stream_url)


@jobs_app.command("list")
def jobs_list(
    project: Annotated[str | None, typer.Option(help="only this project")] = None,
    status: Annotated[str | None, typer.Option(help="only this status")] = None,
    limit: Annotated[int, typer.Option(help="at most this many")] = 50,
) -> None:
    """The newest jobs as a table."""
    from datetime import datetime

    from rich.table import Table
    from sqlalchemy import select

    from models import Job
    from models.engine import get_engine

    _ready()
    query = select(Job).order_by(Job.created_on.desc()).limit(limit)
    if project:
        query = query.where(Job.project_gid == project)
    if status:
        query = query.where(Job.status == status)
    from sqlmodel import Session

    with Session(get_engine()) as session:
        rows = session.execute(query).scalars().all()
    table = Table("token", "job", "status", "total", "remaining", "failed", "created")
    for j in rows:
        info = j.info or {}
        table.add_row(j.token, j.job, j.status, str(info.get("total", "")),
                      str(info.get("remaining", "")), str(info.get("failed", "")),
                      datetime.fromtimestamp(j.created_on).isoformat(timespec="seconds"))
    Console().print(table)


@jobs_app.command("cancel")
def jobs_cancel(token: Annotated[str, typer.Argument(help="the job token")]) -> None:
    """Stop a job after its current batch."""
    from bulkjobs.connections import get_synclog
    from bulkjobs.errors import NotFound
    from models import Job
    from models.engine import get_engine
    from worker.submit import cancel

    _ready()
    with get_engine().connect() as conn:
        from sqlalchemy import select

        row = conn.execute(select(Job.project_gid).where(Job.token == token)).first()
    if row is None:
        err.print(f"[red]no job {token}")
        raise typer.Exit(1)
    try:
        result = cancel(project_gid=row[0], token=token, log=get_synclog())
    except NotFound:
        err.print(f"[red]no job {token}")
        raise typer.Exit(1) from None
    err.print(f"job {token}: {result['status']} (cancel requested)")


if __name__ == "__main__":
    app()
