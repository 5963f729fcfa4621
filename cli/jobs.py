"""Job commands: ``submit``, ``watch`` and the ``jobs`` group (``list``, ``cancel``,
``failures``, ``retry``, ``pause``, ``resume``; ``show`` is :mod:`cli.job_detail`)."""

from __future__ import annotations

import json
import math
import re
from typing import Annotated, Any

import typer

from cli.common import (
    JSON_OPTION,
    acting_user,
    err,
    job_project,
    known_project,
    print_rows,
    ready,
    refuse,
    require_project,
    when,
)
from models.jobs import JobStatus

jobs_app = typer.Typer(help="List, show, cancel, pause and resume jobs, export and retry their "
                       "failed items.", no_args_is_help=True)


def _stream_url() -> str:
    from bulkjobs.settings import get_settings

    return f"ws://127.0.0.1:{get_settings().stream_port}/sync"


def _watch(token: str, username: str | None, url: str | None) -> None:
    from websockets.exceptions import WebSocketException

    from bulkjobs.tokens import issue
    from cli.watching import run_watch
    from stream.client import AuthFailed, StreamError

    user = acting_user(username)
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
    raise typer.Exit(0 if final.status == JobStatus.DONE else 1)


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

    ready()
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
    user = acting_user(username)
    try:
        require_project(user, project)
        token = queue_job(project_gid=project, job=job, params=params,
                          actor={"type": "user", "id": user.gid}, log=get_synclog(),
                          enqueue=enqueue)
    except BulkJobsError as exc:
        refuse(exc, 2)
    print(token)
    if watch:
        _watch(token, username, stream_url)


def watch(
    token: Annotated[str, typer.Argument(help="the job token")],
    username: Annotated[str | None, typer.Option(help="watch as this user")] = None,
    stream_url: Annotated[str | None, typer.Option(help="ws://host:port/sync")] = None,
) -> None:
    """Follow a job live over the websocket stream until it ends (exit 0: done; 1: not done,
    or no such job; 3: the stream could not be reached or refused)."""
    ready()
    _watch(token, username, stream_url)


@jobs_app.command("list")
def jobs_list(
    project: Annotated[str | None, typer.Option(help="only this project")] = None,
    status: Annotated[JobStatus | None, typer.Option(help="only this status")] = None,
    job: Annotated[str | None, typer.Option(
        help="only jobs of this kind, e.g. bulk_delete_records")] = None,
    since: Annotated[str | None, typer.Option(
        help="created at or after: ISO time (local unless it names a zone) or epoch "
             "seconds")] = None,
    until: Annotated[str | None, typer.Option(help="created before: as --since")] = None,
    prefix: Annotated[str | None, typer.Option(
        help="only jobs whose token starts with this")] = None,
    limit: Annotated[int, typer.Option(help="at most this many (a page)", min=1,
                                       max=1000)] = 50,
    cursor: Annotated[str | None, typer.Option(
        help="the next page: the cursor the previous page printed")] = None,
    as_json: Annotated[bool, JSON_OPTION] = False,
) -> None:
    """The newest jobs as a table, a page at a time; the next page's --cursor is printed
    on stderr (exit 2: a bad filter or cursor)."""
    from sqlmodel import Session

    from bulkjobs.errors import BulkJobsError
    from models import job_list
    from models.engine import get_engine

    filters = _list_filters(job, since, until, prefix)
    ready()
    try:
        if project is not None:
            known_project(project)
        with Session(get_engine()) as session:
            jobs, after = job_list.page(session, project_gid=project, status=status,
                                        page_cursor=cursor, page_size=limit, **filters)
    except BulkJobsError as exc:
        refuse(exc, 2)
    print_rows(["token", "project", "job", "status", "total", "remaining", "failed", "created"],
               [[j.token, j.project_gid, j.job, j.status, (j.info or {}).get("total"),
                (j.info or {}).get("remaining"), (j.info or {}).get("failed"),
                when(j.created_on)] for j in jobs], as_json)
    if after is not None:
        err.print(f"next page: --cursor {after}")


def _list_filters(job: str | None, since: str | None, until: str | None,
                  prefix: str | None) -> dict[str, Any]:
    """``jobs list``'s filters as :func:`models.job_list.page` takes them; exit 2 naming
    the option for a bad one."""
    from worker.jobs import CATALOGUE

    if job is not None and job not in CATALOGUE:
        err.print(f"[red]--job: unknown job {job!r}; the jobs are {', '.join(sorted(CATALOGUE))}")
        raise typer.Exit(2)
    if prefix is not None and not re.fullmatch(r"[0-9a-f-]{1,36}", prefix):
        err.print(f"[red]--prefix: {prefix!r} is not the start of a token (0-9, a-f and -)")
        raise typer.Exit(2)
    filters: dict[str, Any] = {"job": job, "token_prefix": prefix}
    for name, key, value in (("--since", "created_after", since),
                             ("--until", "created_before", until)):
        try:
            filters[key] = None if value is None else parse_time(value)
        except ValueError as exc:
            err.print(f"[red]{name}: {exc}")
            raise typer.Exit(2) from None
    return filters


def parse_time(value: str) -> float:
    """Epoch seconds of ``value``: a number of epoch seconds, or an ISO 8601 date or time
    (local time unless it names a zone).  Raises :class:`ValueError` saying what it takes."""
    from datetime import datetime

    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = datetime.fromisoformat(value.strip()).timestamp()
        except ValueError:
            raise ValueError(f"{value!r} is neither an ISO time (2026-01-31T12:00) nor epoch "
                             "seconds") from None
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"{value!r} is not a time after 1970")
    return seconds


@jobs_app.command("cancel")
def jobs_cancel(token: Annotated[str, typer.Argument(help="the job token")]) -> None:
    """Stop a job after its current batch (exit 1: no such job, or it has finished)."""
    from bulkjobs.connections import get_synclog
    from bulkjobs.errors import NotFound
    from models import Job
    from models.engine import get_engine
    from worker.submit import cancel

    ready()
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


@jobs_app.command("failures")
def jobs_failures(
    token: Annotated[str, typer.Argument(help="the job token")],
    as_json: Annotated[bool, JSON_OPTION] = False,
) -> None:
    """Every item the job failed, with its reason (exit 1: no such job)."""
    import sys

    from models.engine import get_engine
    from models.failures import MAX_PAGE, page

    ready()
    job_project(token)
    if not as_json:
        with get_engine().connect() as conn:
            rows = page(conn, token, size=MAX_PAGE)
        print_rows(["gid", "reason"], [[gid, reason] for _, gid, reason in rows], False)
        if len(rows) == MAX_PAGE:
            err.print(f"the first {MAX_PAGE} failures; --json exports them all")
        return
    # Exported page by page: any number of failures, in bounded memory.
    after, sep = 0, ""
    sys.stdout.write("[")
    while True:
        with get_engine().connect() as conn:
            rows = page(conn, token, after=after, size=MAX_PAGE)
        for _, gid, reason in rows:
            sys.stdout.write(sep + json.dumps({"gid": gid, "reason": reason}))
            sep = ", "
        if len(rows) < MAX_PAGE:
            break
        after = rows[-1][0]
    sys.stdout.write("]\n")


@jobs_app.command("retry")
def jobs_retry(
    token: Annotated[str, typer.Argument(help="the finished job's token")],
    username: Annotated[str | None, typer.Option(help="act as this user")] = None,
) -> None:
    """Queue a job of the same kind and parameters over exactly the failed items of a
    finished job and print its token (exit 1: no such job, not finished, or no failed
    item)."""
    from bulkjobs.connections import get_synclog
    from bulkjobs.errors import BulkJobsError
    from worker.app import enqueue_many
    from worker.rerun import retry_failed

    ready()
    project = job_project(token)
    user = acting_user(username)
    try:
        require_project(user, project)
        new = retry_failed(project_gid=project, token=token,
                           actor={"type": "user", "id": user.gid}, log=get_synclog(),
                           enqueue=enqueue_many)
    except BulkJobsError as exc:
        refuse(exc, 1)
    print(new)


def _scope(project: str | None, every: bool) -> str:
    """The pause scope the options name: a project's gid, or every project (``--all``)."""
    from models.pauses import EVERY_PROJECT

    if (project is None) == (not every):
        err.print("[red]give --project <gid> or --all")
        raise typer.Exit(2)
    return EVERY_PROJECT if every else str(project)


@jobs_app.command("pause")
def jobs_pause(
    project: Annotated[str | None, typer.Option(help="pause this project's jobs")] = None,
    every: Annotated[bool, typer.Option("--all", help="pause every project's jobs")] = False,
) -> None:
    """Pause jobs: running ones stop after their current batch, queued ones wait."""
    from bulkjobs.connections import get_synclog
    from worker.deps import Deps
    from worker.pausing import pause_jobs

    scope = _scope(project, every)
    ready()
    paused = pause_jobs(Deps.default(get_synclog(), heartbeat=False), scope, by="cli")
    err.print(f"jobs of {'every project' if every else project}: "
              f"{'paused' if paused else 'paused already'}")


@jobs_app.command("resume")
def jobs_resume(
    project: Annotated[str | None, typer.Option(help="resume this project's jobs")] = None,
    every: Annotated[bool, typer.Option("--all", help="resume every project's jobs")] = False,
) -> None:
    """Resume paused jobs where they stopped (jobs of a project paused on its own stay paused
    after --all)."""
    from bulkjobs.connections import get_synclog
    from worker.app import enqueue_many
    from worker.deps import Deps
    from worker.pausing import resume

    scope = _scope(project, every)
    ready()
    tokens = resume(Deps.default(get_synclog(), heartbeat=False), scope, enqueue=enqueue_many)
    err.print(f"jobs of {'every project' if every else project}: resumed, "
              f"{len(tokens)} job(s) sent again")
