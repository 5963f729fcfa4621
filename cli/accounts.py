"""Account commands: the ``users`` group (``add``, ``list``, ``disable``, ``enable``,
``remove-ops``) and the ``apikeys`` group (``add``, ``list``, ``revoke``)."""

from __future__ import annotations

from typing import Annotated

import typer

from cli.common import JSON_OPTION, acting_user, err, print_rows, ready, when

users_app = typer.Typer(help="Add, list and disable users.", no_args_is_help=True)
apikeys_app = typer.Typer(help="Add, list and revoke API keys.", no_args_is_help=True)


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

    ready()
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

    ready()
    with Session(get_engine()) as session:
        projects: dict[str, int] = {gid: int(n) for gid, n in session.execute(
            select(col(Member.user_gid), func.count()).where(col(Member.status) == "active")
            .group_by(col(Member.user_gid)))}
        users = session.execute(select(User).order_by(col(User.username))).scalars().all()
    print_rows(["username", "gid", "name", "ops", "projects", "disabled"],
               [[u.username, u.gid, u.name, u.ops, "all" if u.ops else projects.get(u.gid, 0),
                u.disabled] for u in users], as_json)


def _end_access(change, what: str, **name: str) -> None:  # type: ignore[no-untyped-def]
    """Run one of :mod:`models.accounts`' ``disable_user`` & co. and say what it did."""
    from sqlmodel import Session

    from bulkjobs.errors import NotFound
    from models.engine import get_write_engine

    ready()
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
    request on, and open websockets close before their next delivery."""
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
    """Take the ops flag away: from the user's next request on (and on open websockets before
    their next delivery) they see their own projects only."""
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

    ready()
    user = acting_user(username)
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

    ready()
    query = (select(ApiKey, col(User.username))
             .join(User, col(User.gid) == col(ApiKey.user_gid))
             .order_by(col(User.username), col(ApiKey.project_gid), col(ApiKey.name)))
    if username:
        query = query.where(col(User.username) == username)
    with Session(get_engine()) as session:
        rows = session.execute(query).all()
    print_rows(["id", "name", "user", "project", "created"],
               [[key.key_id, key.name, user, key.project_gid, when(key.created_on)]
                for key, user in rows], as_json)


@apikeys_app.command("revoke")
def apikeys_revoke(
    key_id: Annotated[str, typer.Argument(help="the key's id (see `apikeys list`)")],
) -> None:
    """Revoke an API key: it opens nothing any more, and the JWTs made from it are refused
    from their next request on, and their open websockets close before their next delivery."""
    from models.accounts import revoke_api_key

    _end_access(revoke_api_key, f"API key [bold]{key_id}[/] revoked", key_id=key_id)
