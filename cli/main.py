"""The ``bulkjobs`` command line (typer).  Every command migrates the schema first, so each
works on an empty database."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from models.jobs import JobStatus

app = typer.Typer(help="bulkjobs: bulk content jobs with a live, resumable event stream.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
err = Console(stderr=True)


@app.callback()
def main() -> None:
    """Log set-up for every command: LOG_FORMAT applies; the level is WARNING unless LOG_LEVEL
    is set, so that commands print their own output and nothing else."""
    from bulkjobs import logs
    from bulkjobs.settings import settings_or_exit

    settings = settings_or_exit()
    logs.setup(level=None if "log_level" in settings.model_fields_set else "WARNING")


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
    marker_every: Annotated[int, typer.Option(
        help="the search marker word in every n-th record's text (1: every record)")] = 9,
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

    _ready()
    with Session(get_engine()) as session:
        user = session.execute(
            select(User).where(col(User.username) == username)).scalar_one_or_none()
    if user is None or user.disabled:
        err.print(f"[red]no user named {username!r}" if user is None
                  else f"[red]user {username!r} is disabled")
        raise typer.Exit(1)
    # A new session: it ends SESSION_MAX_AGE from now at the latest, whatever --ttl says.
    print(issue(user.gid, ops=user.ops, ttl=ttl, ver=user.token_version))


jobs_app = typer.Typer(help="List and cancel jobs.", no_args_is_help=True)
app.add_typer(jobs_app, name="jobs")


def _user(username: str | None):  # type: ignore[no-untyped-def]
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


def _require_project(user, project: str) -> None:  # type: ignore[no-untyped-def]
    """Raise :class:`~bulkjobs.errors.Forbidden` unless ``user`` may act on ``project``."""
    from sqlmodel import Session

    from models.accounts import require_member, session_claims
    from models.engine import get_engine

    with Session(get_engine()) as session:
        require_member(session, session_claims(user), project)


def _stream_url() -> str:
    from bulkjobs.settings import get_settings

    return f"ws://127.0.0.1:{get_settings().stream_port}/sync"


def _watch(token: str, username: str | None, url: str | None) -> None:
    from websockets.exceptions import WebSocketException

    from bulkjobs.tokens import issue
    from cli.watching import run_watch
    from stream.client import AuthFailed, StreamError

    user = _user(username)
    url = url or _stream_url()
    try:
        final = run_watch(token, url=url, console=err,
                          jwt=issue(user.gid, ops=user.ops, ver=user.token_version))
    except LookupError:
        err.print(f"[red]no job {token}")
        raise typer.Exit(1) from None
    except AuthFailed as exc:
        err.print(f"[red]the stream at {url} refused the token: {exc}")
        raise typer.Exit(3) from None
    except StreamError as exc:
        code = f" ({exc.code})" if exc.code is not None else ""
        err.print(f"[red]the stream at {url} refused to follow job {token}{code}: {exc}")
        raise typer.Exit(3) from None
    except (OSError, TimeoutError, WebSocketException) as exc:
        err.print(f"[red]cannot reach the stream at {url}: {exc or type(exc).__name__}")
        raise typer.Exit(3) from None
    err.print(f"job {token}: [bold]{final.status}[/] {json.dumps(final.info)}")
    raise typer.Exit(0 if final.status == "done" else 1)


def parse_params(pairs: list[str]) -> dict[str, object]:
    """``KEY=VALUE`` pairs as job parameters: a value is JSON when it parses as JSON (``3``,
    ``true``, ``{"a": 1}``), else the text itself (a version id); quote a number to pass it
    as a string (``version='"3"'``).  Raises :class:`ValueError` naming a bad pair."""
    params: dict[str, object] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"{pair!r} is not KEY=VALUE")
        if key == "selection":
            raise ValueError("the selection goes in --selection")
        try:
            params[key] = json.loads(value)
        except ValueError:
            params[key] = value
    return params


@app.command()
def submit(
    job: Annotated[str, typer.Argument(help="job name, e.g. bulk_delete_records")],
    project: Annotated[str, typer.Option(help="project gid")],
    selection: Annotated[str, typer.Option(help="the selection as JSON")],
    param: Annotated[list[str] | None, typer.Option(
        help="a job parameter KEY=VALUE, the value JSON or text (repeatable), e.g. "
             "version=3 for revert_record_version")] = None,
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
    try:
        params = {**parse_params(param or []), "selection": parsed}
    except ValueError as exc:
        err.print(f"[red]--param: {exc}")
        raise typer.Exit(2) from None
    user = _user(username)
    try:
        _require_project(user, project)
        token = queue_job(project_gid=project, job=job, params=params,
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
    """Follow a job live over the websocket stream until it ends (exit 0: done; 1: not done,
    or no such job; 3: the stream could not be reached or refused)."""
    _ready()
    _watch(token, username, stream_url)


def _rows(columns: list[str], rows: list[list[object]], as_json: bool) -> None:
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
        table.add_row(*(_cell(v) for v in row))
    Console().print(table)


def _cell(value: object) -> str:
    """A table cell: ``yes`` or empty for a flag, empty for nothing."""
    if isinstance(value, bool):
        return "yes" if value else ""
    return "" if value is None else str(value)


#: Columns printed whole, whatever the terminal's width.
WHOLE = frozenset({"token", "gid", "id", "project"})
JSON_OPTION = typer.Option("--json", help="print one JSON array")


def _when(seconds: float) -> str:
    from datetime import datetime

    return datetime.fromtimestamp(seconds).isoformat(timespec="seconds")


@jobs_app.command("list")
def jobs_list(
    project: Annotated[str | None, typer.Option(help="only this project")] = None,
    status: Annotated[JobStatus | None, typer.Option(help="only this status")] = None,
    limit: Annotated[int, typer.Option(help="at most this many", min=1)] = 50,
    as_json: Annotated[bool, JSON_OPTION] = False,
) -> None:
    """The newest jobs as a table."""
    from sqlalchemy import select
    from sqlmodel import Session, col

    from models import Job
    from models.engine import get_engine
    from models.jobs import PUBLIC_ONLY

    _ready()
    query = select(Job).options(*PUBLIC_ONLY).order_by(col(Job.created_on).desc()).limit(limit)
    if project:
        query = query.where(col(Job.project_gid) == project)
    if status:
        query = query.where(col(Job.status) == status)

    with Session(get_engine()) as session:
        jobs = session.execute(query).scalars().all()
    _rows(["token", "project", "job", "status", "total", "remaining", "failed", "created"],
          [[j.token, j.project_gid, j.job, j.status, (j.info or {}).get("total"),
            (j.info or {}).get("remaining"), (j.info or {}).get("failed"),
            _when(j.created_on)] for j in jobs], as_json)


@jobs_app.command("cancel")
def jobs_cancel(token: Annotated[str, typer.Argument(help="the job token")]) -> None:
    """Stop a job after its current batch (exit 1: no such job, or it has finished)."""
    from bulkjobs.connections import get_synclog
    from bulkjobs.errors import NotFound
    from models import Job
    from models.engine import get_engine
    from worker.submit import cancel

    _ready()
    with get_engine().connect() as conn:
        from sqlalchemy import select
        from sqlmodel import col

        row = conn.execute(select(col(Job.project_gid), col(Job.status))
                           .where(col(Job.token) == token)).first()
    if row is None:
        err.print(f"[red]no job {token}")
        raise typer.Exit(1)
    if JobStatus(row[1]).terminal:
        err.print(f"[red]job {token} has finished ({row[1]}): nothing to cancel")
        raise typer.Exit(1)
    try:
        result = cancel(project_gid=row[0], token=token, log=get_synclog())
    except NotFound:
        err.print(f"[red]no job {token}")
        raise typer.Exit(1) from None
    err.print(f"job {token}: {result['status']} (cancel requested)")



# -- users and API keys ------------------------------------------------------------------------

users_app = typer.Typer(help="Add, list and disable users.", no_args_is_help=True)
app.add_typer(users_app, name="users")
apikeys_app = typer.Typer(help="Add, list and revoke API keys.", no_args_is_help=True)
app.add_typer(apikeys_app, name="apikeys")


@users_app.command("add")
def users_add(
    username: Annotated[str, typer.Argument(help="the login name")],
    password: Annotated[str, typer.Option(
        prompt=True, hide_input=True, confirmation_prompt=True, envvar="BULKJOBS_PASSWORD",
        help="asked for when not given (or from BULKJOBS_PASSWORD)")],
    name: Annotated[str, typer.Option(help="display name")] = "",
    ops: Annotated[bool, typer.Option("--ops", help="may watch and act on every project")] = False,
    project: Annotated[list[str] | None, typer.Option(
        help="make the user an active member of this project (repeatable)")] = None,
    role: Annotated[str, typer.Option(help="role in those projects: member or owner")] = "member",
) -> None:
    """Create a user (and memberships); prints the user's gid."""
    from sqlmodel import Session

    from bulkjobs.errors import BulkJobsError, NotFound
    from models.accounts import add_member, create_user
    from models.auth import Project
    from models.engine import get_write_engine

    _ready()
    if role not in ("member", "owner"):
        err.print("[red]--role must be member or owner")
        raise typer.Exit(2)
    try:
        with Session(get_write_engine(), expire_on_commit=False) as session:
            for gid in project or []:  # checked first: no user without its memberships
                if session.get(Project, gid) is None:
                    raise NotFound(f"no project {gid}")
            user = create_user(session, username=username, password=password, name=name,
                               ops=ops)
            for gid in project or []:
                add_member(session, user=user, project_gid=gid, roles=[role])
    except BulkJobsError as exc:
        err.print(f"[red]{exc.message}")
        raise typer.Exit(1) from None
    err.print(f"user [bold]{username}[/] created{' (ops)' if ops else ''}"
              f"{f', {role} of {len(project)} project(s)' if project else ''}")
    print(user.gid)


@users_app.command("list")
def users_list(as_json: Annotated[bool, JSON_OPTION] = False) -> None:
    """Every user with its gid, ops flag, active projects and whether it is disabled."""
    from sqlalchemy import func, select
    from sqlmodel import Session, col

    from models.auth import Member, User
    from models.engine import get_engine

    _ready()
    with Session(get_engine()) as session:
        projects: dict[str, int] = {gid: int(n) for gid, n in session.execute(
            select(col(Member.user_gid), func.count()).where(col(Member.status) == "active")
            .group_by(col(Member.user_gid)))}
        users = session.execute(select(User).order_by(col(User.username))).scalars().all()
    _rows(["username", "gid", "name", "ops", "projects", "disabled"],
          [[u.username, u.gid, u.name, u.ops, "all" if u.ops else projects.get(u.gid, 0),
            u.disabled] for u in users], as_json)


def _end_access(change, what: str, **name: str) -> None:  # type: ignore[no-untyped-def]
    """Run one of :mod:`models.accounts`' ``disable_user`` & co. and say what it did."""
    from sqlmodel import Session

    from bulkjobs.errors import NotFound
    from models.engine import get_write_engine

    _ready()
    try:
        with Session(get_write_engine()) as session:
            change(session, **name)
    except NotFound as exc:
        err.print(f"[red]{exc.message}")
        raise typer.Exit(1) from None
    err.print(what)


@users_app.command("disable")
def users_disable(username: Annotated[str, typer.Argument(help="the login name")]) -> None:
    """Disable a user: no more logins, and every token of theirs is refused from the next
    request on (open websockets close within MEMBERSHIP_REFRESH seconds)."""
    from models.accounts import disable_user

    _end_access(disable_user, f"user [bold]{username}[/] disabled; their sessions are ended",
                username=username)


@users_app.command("enable")
def users_enable(username: Annotated[str, typer.Argument(help="the login name")]) -> None:
    """Let a disabled user log in again (their old tokens stay refused)."""
    from models.accounts import enable_user

    _end_access(enable_user, f"user [bold]{username}[/] enabled", username=username)


@users_app.command("remove-ops")
def users_remove_ops(username: Annotated[str, typer.Argument(help="the login name")]) -> None:
    """Take the ops flag away: from the user's next request on (and on open websockets within
    MEMBERSHIP_REFRESH seconds) they see their own projects only."""
    from models.accounts import remove_ops

    _end_access(remove_ops, f"user [bold]{username}[/] is no longer ops", username=username)


@apikeys_app.command("add")
def apikeys_add(
    username: Annotated[str, typer.Option(help="the key's user")],
    project: Annotated[str, typer.Option(help="the project the key opens")],
    name: Annotated[str, typer.Option(help="a name to tell the user's keys apart")] = "default",
) -> None:
    """Create an API key and print it; it is shown this once (only its digest is stored)."""
    from sqlmodel import Session

    from bulkjobs.errors import BulkJobsError
    from bulkjobs.tokens import api_key_digest
    from models.accounts import create_api_key
    from models.auth import ApiKey
    from models.engine import get_write_engine

    _ready()
    user = _user(username)
    try:
        with Session(get_write_engine()) as session:
            key = create_api_key(session, user=user, project_gid=project, name=name)
            created = session.get(ApiKey, api_key_digest(key))
            assert created is not None
    except BulkJobsError as exc:
        err.print(f"[red]{exc.message}")
        raise typer.Exit(1) from None
    err.print(f"API key [bold]{name}[/] (id [bold]{created.key_id}[/]) of {username} for "
              f"project {project} (shown once; store it now)")
    print(key)


@apikeys_app.command("list")
def apikeys_list(
    username: Annotated[str | None, typer.Option(help="only this user's keys")] = None,
    as_json: Annotated[bool, JSON_OPTION] = False,
) -> None:
    """API keys by id, name, user and project (never the keys themselves)."""
    from sqlalchemy import select
    from sqlmodel import Session, col

    from models.auth import ApiKey, User
    from models.engine import get_engine

    _ready()
    query = (select(ApiKey, col(User.username))
             .join(User, col(User.gid) == col(ApiKey.user_gid))
             .order_by(col(User.username), col(ApiKey.project_gid), col(ApiKey.name)))
    if username:
        query = query.where(col(User.username) == username)
    with Session(get_engine()) as session:
        rows = session.execute(query).all()
    _rows(["id", "name", "user", "project", "created"],
          [[key.key_id, key.name, user, key.project_gid, _when(key.created_on)]
           for key, user in rows], as_json)


@apikeys_app.command("revoke")
def apikeys_revoke(
    key_id: Annotated[str, typer.Argument(help="the key's id (see `apikeys list`)")],
) -> None:
    """Revoke an API key: it opens nothing any more, and the JWTs made from it are refused
    from their next request on (open websockets close within MEMBERSHIP_REFRESH seconds)."""
    from models.accounts import revoke_api_key

    _end_access(revoke_api_key, f"API key [bold]{key_id}[/] revoked", key_id=key_id)


# -- ops ---------------------------------------------------------------------------------------


@app.command()
def stats(
    project: Annotated[list[str] | None, typer.Option(help="only these projects (repeatable)")]
    = None,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
) -> None:
    """Queue depth, live workers, jobs by status and the last minute's throughput."""
    from rich.table import Table

    from bulkjobs.connections import get_broker_redis, get_redis
    from bulkjobs.settings import get_settings
    from models import ops
    from models.engine import get_engine

    _ready()
    settings = get_settings()
    with get_engine().connect() as conn:
        result = ops.collect(conn, client=get_redis(), broker=get_broker_redis(),
                             projects=project or None, heartbeat=settings.worker_heartbeat,
                             stale_after=settings.stale_after)
    if as_json:
        sys.stdout.write(json.dumps(result.as_json()) + "\n")
        return
    table = Table("", "", title="bulkjobs" + (f" ({len(project)} project(s))" if project else ""),
                  show_header=False)
    table.add_row("queue depth", "n/a (broker is not Redis)" if result.queue_depth is None
                  else str(result.queue_depth))
    table.add_row("workers alive", f"{len(result.workers)}  {' '.join(result.workers)}")
    table.add_row("jobs running", str(result.busy))
    for status, n in result.jobs.items():
        table.add_row(f"jobs {status}", str(n))
    rate = result.throughput
    table.add_row(f"items/s (last {rate.window:.0f} s)", f"{rate.items_per_s:,.1f}")
    table.add_row(f"jobs/s (last {rate.window:.0f} s)", f"{rate.jobs_per_s:,.2f}")
    Console().print(table)


if __name__ == "__main__":
    app()
