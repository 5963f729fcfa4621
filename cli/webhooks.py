"""``bulkjobs webhooks``: a project's webhooks (``list``, ``create``, ``delete``) and their
deliveries, over :mod:`models.webhooks` and :mod:`models.webhook_deliveries` as the API's
``webhooks/*`` routes are.  Acting as an owner of the project or an ops user; a secret is
taken, never printed."""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import typer
from rich.markup import escape

from cli.common import JSON_OPTION, acting_user, err, print_rows, ready, refuse, when
from models.webhooks import EVENTS

webhooks_app = typer.Typer(help="Send a project's job states to URLs: list, create and delete "
                           "webhooks, show their deliveries.", no_args_is_help=True)

PROJECT = typer.Option(help="the project's gid")
USERNAME = typer.Option(help="act as this user (an owner of the project, or ops)")
COLUMNS = ["gid", "url", "events", "created_by", "created"]


def _owner(project: str, username: str | None) -> str:
    """The acting user's gid, once it is known to own ``project`` (or be ops); exit 1 for
    an unknown project or a user who may not."""
    from bulkjobs.errors import BulkJobsError
    from cli.common import require_project

    user = acting_user(username)
    try:
        require_project(user, project, owner=True)
    except BulkJobsError as exc:
        refuse(exc, 1)
    return user.gid


def _rows(hooks: list[dict[str, Any]]) -> list[list[object]]:
    return [[h["gid"], h["url"], h["events"], h["created_by"], when(h["created_on"])]
            for h in hooks]


@webhooks_app.command("list")
def webhooks_list(
    project: Annotated[str, PROJECT],
    username: Annotated[str | None, USERNAME] = None,
    as_json: Annotated[bool, JSON_OPTION] = False,
) -> None:
    """The project's webhooks, without their secrets."""
    from sqlmodel import Session

    from models import webhooks
    from models.engine import get_engine

    ready()
    _owner(project, username)
    with Session(get_engine()) as session:
        hooks = [h.public() for h in webhooks.listed(session, project_gid=project)]
    print_rows(COLUMNS, _rows(hooks), as_json)


@webhooks_app.command("create")
def webhooks_create(
    project: Annotated[str, PROJECT],
    url: Annotated[str, typer.Option(help="where to send: http or https")],
    secret: Annotated[str, typer.Option(
        prompt=True, hide_input=True, envvar="BULKJOBS_WEBHOOK_SECRET",
        help="signs each delivery (16 to 256 characters); asked for, or from "
             "BULKJOBS_WEBHOOK_SECRET")],
    event: Annotated[list[str] | None, typer.Option(
        help=f"an event to send (repeatable; default all: {', '.join(EVENTS)})")] = None,
    username: Annotated[str | None, USERNAME] = None,
    as_json: Annotated[bool, JSON_OPTION] = False,
) -> None:
    """Send the project's job states to a URL (exit 1: a URL, event or secret refused —
    private addresses only with WEBHOOKS_ALLOW_PRIVATE=true)."""
    from sqlmodel import Session

    from bulkjobs.errors import BulkJobsError
    from bulkjobs.settings import get_settings
    from models import webhooks
    from models.engine import get_engine

    ready()
    user_gid = _owner(project, username)
    try:
        with Session(get_engine()) as session:
            hook = webhooks.create(session, project_gid=project, url=url,
                                   events=list(EVENTS) if event is None else event,
                                   secret=secret, user_gid=user_gid,
                                   allow_private=get_settings().webhooks_allow_private)
            made = hook.public()
    except BulkJobsError as exc:
        refuse(exc, 1)
    print_rows(COLUMNS, _rows([made]), as_json)


@webhooks_app.command("delete")
def webhooks_delete(
    gid: Annotated[str, typer.Argument(help="the webhook's gid")],
    project: Annotated[str, PROJECT],
    username: Annotated[str | None, USERNAME] = None,
) -> None:
    """Stop sending to a webhook (exit 1: no such webhook in the project)."""
    from sqlmodel import Session

    from bulkjobs.errors import BulkJobsError
    from models import webhooks
    from models.engine import get_engine

    ready()
    _owner(project, username)
    try:
        with Session(get_engine()) as session:
            webhooks.remove(session, project_gid=project, gid=gid)
    except BulkJobsError as exc:
        refuse(exc, 1)
    err.print(f"webhook {escape(gid)} deleted")


@webhooks_app.command("deliveries")
def webhooks_deliveries(
    gid: Annotated[str, typer.Argument(help="the webhook's gid")],
    project: Annotated[str, PROJECT],
    limit: Annotated[int, typer.Option(help="at most this many (a page)", min=1,
                                       max=1000)] = 50,
    cursor: Annotated[str | None, typer.Option(
        help="the next page: the cursor the previous page printed")] = None,
    username: Annotated[str | None, USERNAME] = None,
    as_json: Annotated[bool, typer.Option(
        "--json", help="print one JSON array, each delivery with its attempts")] = False,
) -> None:
    """A webhook's deliveries, newest first; the next page's --cursor is printed on stderr
    (exit 1: no such webhook in the project; 2: a bad cursor)."""
    from sqlmodel import Session

    from bulkjobs.errors import BulkJobsError
    from models import webhook_deliveries, webhooks
    from models.engine import get_engine

    ready()
    _owner(project, username)
    with Session(get_engine()) as session:
        hook = session.get(webhooks.Webhook, gid)
        if hook is None or hook.project_gid != project:
            err.print(f"[red]no webhook {escape(gid)} in project {escape(project)}")
            raise typer.Exit(1)
        try:
            found, after = webhook_deliveries.page(session.connection(), webhook_gid=gid,
                                                   size=limit, cursor=cursor)
        except BulkJobsError as exc:
            refuse(exc, 2)
    if as_json:
        sys.stdout.write(json.dumps(found) + "\n")
    else:
        print_rows(["delivery", "event", "token", "status", "attempts", "last", "created"],
                   [[d["delivery"], d["event"], d["job"], d["status"], len(d["attempts"]),
                     _last(d["attempts"]), when(d["created_on"])] for d in found], False)
    if after is not None:
        err.print(f"next page: --cursor {after}")


def _last(attempts: list[dict[str, object]]) -> str | None:
    """The last attempt's outcome: its HTTP status, or its error."""
    if not attempts:
        return None
    last = attempts[-1]
    return str(last["status_code"]) if last["status_code"] is not None else str(last["error"])
