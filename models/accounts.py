"""Logging in: API keys and passwords to users; what a token may do, as the database says
on every request (the user row's ``ops``, disabled users, ended sessions, revoked API keys,
memberships); creating, disabling and revoking accounts and keys (the CLI; a revocation is
announced to the stream relays, :mod:`bulkjobs.revocations`).  Shared by every dialect and by
the stream server."""

from __future__ import annotations

import secrets
import time
import uuid
from collections.abc import Sequence
from dataclasses import replace
from functools import lru_cache
from typing import Any, NamedTuple

from sqlalchemy import Connection, Select, bindparam, literal, select, update
from sqlmodel import Session, col

from bulkjobs import revocations
from bulkjobs.errors import BadRequest, BulkJobsError, Forbidden, NotFound, Unauthorized
from bulkjobs.tokens import Claims, api_key_digest, check_password, hash_password, new_api_key
from models.auth import ApiKey, Member, Project, User
from models.engine import begin_writing
from models.queries import visible_projects


def api_key_login(session: Session, *, project_gid: str, api_key: str) -> tuple[User, ApiKey]:
    """The user of an API key of ``project_gid``, and the key; :class:`Unauthorized` for an
    unknown (or revoked) key, a key of another project or a disabled user."""
    row = session.execute(
        select(User, ApiKey).join(ApiKey, col(ApiKey.user_gid) == col(User.gid))
        .where(col(ApiKey.key_hash) == api_key_digest(api_key))
    ).first() if isinstance(api_key, str) else None
    if row is None or row[1].project_gid != project_gid or row[0].disabled:
        raise Unauthorized("Invalid API key")
    return row[0], row[1]


def user_for_api_key(session: Session, *, project_gid: str, api_key: str) -> User:
    return api_key_login(session, project_gid=project_gid, api_key=api_key)[0]


def user_for_password(session: Session, *, username: str, password: str) -> User:
    user = session.execute(select(User).where(User.username == username)).scalar_one_or_none()
    # An unknown username costs one scrypt too: answering faster would tell an attacker which
    # usernames exist.
    stored = user.password_hash if user is not None else _decoy_hash()
    if not check_password(password, stored) or user is None:
        raise Unauthorized("Invalid username or password")
    if user.disabled:
        raise Unauthorized("User disabled")
    return user


def session_claims(user: User, *, key: ApiKey | None = None) -> Claims:
    """The claims of a new session of ``user`` (a login, now); made from an API key they
    open that key's project only."""
    return Claims(user=user.gid, ops=user.ops, exp=0, auth_time=time.time(),
                  ver=user.token_version, prj=None if key is None else key.project_gid,
                  kid=None if key is None else key.key_id)


@lru_cache(maxsize=1)
def _decoy_hash() -> str:
    """A scrypt hash of a random password, checked against when the username is unknown."""
    return hash_password(secrets.token_urlsafe(16))


# -- authority: what the database says about a token, on every request ----------------------


class Standing(NamedTuple):
    """What the database says now about a token's user (and its API key, if any)."""

    ops: bool
    disabled: bool
    token_version: int
    key: str | None  # the token's key id while that key exists


def backed(claims: Claims, standing: Standing | None) -> Claims:
    """``claims`` with ``ops`` as the user row says now; :class:`Unauthorized` when the
    user is gone or disabled, the token's session was ended (its ``ver`` is older than the
    user's token version) or its API key was revoked.  The one rule of the HTTP API and the
    stream server."""
    if standing is None:
        raise Unauthorized("Unknown user")
    if standing.disabled:
        raise Unauthorized("User disabled")
    if claims.ver < standing.token_version:
        raise Unauthorized("Session ended; log in again")
    if claims.kid is not None and standing.key != claims.kid:
        raise Unauthorized("API key revoked")
    return claims if claims.ops == standing.ops else replace(claims, ops=standing.ops)


def _standing_of(claims: Claims) -> Select[Any]:
    """The user row's standing (:class:`Standing`'s columns) for ``claims``: one lookup by
    primary key, and by the key id's unique index for a token made from an API key."""
    query = select(col(User.ops), col(User.disabled), col(User.token_version))
    if claims.kid is None:
        return query.add_columns(literal(None).label("key")).select_from(User).where(
            col(User.gid) == claims.user)
    return query.add_columns(col(ApiKey.key_id).label("key")).select_from(User).outerjoin(
        ApiKey, (col(ApiKey.key_id) == claims.kid) & (col(ApiKey.user_gid) == col(User.gid))
        & (col(ApiKey.project_gid) == claims.prj),
    ).where(col(User.gid) == claims.user)


def authorize(session: Session, claims: Claims) -> Claims:
    """:func:`backed` for a verified token, read in one query (it runs on every request)."""
    row = session.execute(_standing_of(claims)).first()
    return backed(claims, None if row is None else Standing(*row))


def member_access(session: Session, claims: Claims, project_gid: str) -> tuple[Project, Claims]:
    """The project, if the token may act on it, and the claims as the database backs them
    (:func:`backed`): an active member, or an ops user; a token made from an API key only on
    that key's project.  One query (it runs on every request)."""
    row = session.execute(
        _standing_of(claims).add_columns(Project, col(Member.status).label("member"))
        .outerjoin(Project, col(Project.gid) == project_gid)
        .outerjoin(Member, (col(Member.project_gid) == col(Project.gid))
                   & (col(Member.user_gid) == col(User.gid)))
    ).first()
    now = backed(claims, None if row is None else Standing(*row[:4]))
    project, member = row[4], row[5]  # type: ignore[index]
    # Unknown projects answer like forbidden ones, so gids of others' projects leak nothing.
    if project is None or project.status != "active" or now.prj not in (None, project_gid):
        raise Forbidden("Not a member of this project")
    if member == "active" or now.ops:
        return project, now
    raise Forbidden("Not a member of this project")


def require_owner(session: Session, claims: Claims, project_gid: str) -> None:
    """Refuse (403) a member who is not one of the project's owners (``owner`` among the
    member's roles); ops users pass.  For the actions that change how a project's jobs run
    or where their state is sent (webhooks, pause and resume).  Call after
    :func:`member_access`, with the claims it backed."""
    if claims.ops:
        return
    roles = session.execute(
        select(Member.roles).where(col(Member.project_gid) == project_gid,
                                   col(Member.user_gid) == claims.user,
                                   col(Member.status) == "active")).scalar()
    if not roles or "owner" not in roles:
        raise Forbidden("Only an owner of the project may do this")


def require_member(session: Session, claims: Claims, project_gid: str) -> Project:
    """:func:`member_access`'s project."""
    return member_access(session, claims, project_gid)[0]


def visible_to(session: Session, claims: Claims) -> set[str]:
    """Projects that claims backed by the database (:func:`authorize`) may watch: the
    user's (every project for ops), or the API key's project alone."""
    projects = visible_projects(session, user_gid=claims.user, ops=claims.ops)
    return projects if claims.prj is None else projects & {claims.prj}


def may_act(conn: Connection, asks: Sequence[tuple[Claims, str]]) -> list[Claims | BulkJobsError]:
    """:func:`member_access`'s rule for many ``(claims, project gid)`` pairs at once, in two
    queries whatever their number (three when tokens made from API keys are among them):
    for each, the claims as the database backs them, or the error that refuses it."""
    projects = sorted({project for _, project in asks})
    active = set(conn.execute(_ACTIVE_PROJECTS, {"projects": projects}).scalars())
    standing: dict[str, tuple[bool, bool, int]] = {}
    members: set[tuple[str, str]] = set()
    for user, ops, disabled, version, project in conn.execute(_USERS_AND_MEMBERS, {
            "projects": sorted(active), "users": sorted({c.user for c, _ in asks})}):
        standing[user] = (ops, disabled, version)
        if project is not None:
            members.add((project, user))
    kids = sorted({c.kid for c, _ in asks if c.kid is not None})
    live = set(conn.execute(_LIVE_KEYS, {"kids": kids}).scalars()) if kids else set()
    out: list[Claims | BulkJobsError] = []
    for c, project in asks:
        row = standing.get(c.user)
        try:
            now = backed(c, None if row is None else
                         Standing(*row, key=c.kid if c.kid in live else None))
        except Unauthorized as exc:
            out.append(exc)
            continue
        if project in active and now.prj in (None, project) and (
                now.ops or (project, c.user) in members):
            out.append(now)
        else:
            out.append(Forbidden("Not a member of this project"))
    return out


# Built once: the statements of may_act compile once (expanding IN lists), not per batch.
_ACTIVE_PROJECTS = select(Project.gid).where(
    col(Project.gid).in_(bindparam("projects", expanding=True)), Project.status == "active")
_USERS_AND_MEMBERS = select(
    col(User.gid), col(User.ops), col(User.disabled), col(User.token_version),
    col(Member.project_gid),
).outerjoin(Member, (col(Member.user_gid) == col(User.gid))
            & col(Member.project_gid).in_(bindparam("projects", expanding=True))
            & (col(Member.status) == "active")
            ).where(col(User.gid).in_(bindparam("users", expanding=True)))
_LIVE_KEYS = select(col(ApiKey.key_id)).where(
    col(ApiKey.key_id).in_(bindparam("kids", expanding=True)))


def require_user(session: Session, claims: Claims) -> User:
    user = session.get(User, claims.user)
    if user is None:
        raise Unauthorized("Unknown user")
    return user




# -- creating accounts (the CLI's `users add` and `apikeys add`) -----------------------------


def create_user(
    session: Session, *, username: str, password: str, name: str = "", ops: bool = False,
) -> User:
    """Add a user with a scrypt-hashed password; :class:`BadRequest` if the name is taken.
    Commits."""
    if not username.strip():
        raise BadRequest("username must not be empty")
    digest = hash_password(password)  # slow on purpose: not while holding the write lock
    begin_writing(session)  # the check and the insert in one write transaction
    taken = session.execute(select(col(User.gid)).where(col(User.username) == username)).first()
    if taken is not None:
        raise BadRequest(f"user {username!r} exists already")
    user = User(gid=str(uuid.uuid4()), username=username, name=name, password_hash=digest,
                ops=ops)
    session.add(user)
    session.commit()
    return user


def add_member(
    session: Session, *, user: User, project_gid: str, roles: list[str] | None = None,
) -> Member:
    """Make ``user`` an active member of a project (roles ``member`` by default); updates an
    existing membership.  :class:`NotFound` for an unknown project.  Commits."""
    begin_writing(session)
    project = session.get(Project, project_gid)
    if project is None:
        raise NotFound(f"no project {project_gid}")
    member = session.get(Member, (project_gid, user.gid))
    if member is None:
        member = Member(project_gid=project_gid, user_gid=user.gid)
    member.roles = list(roles or ["member"])
    member.status = "active"
    session.add(member)
    session.commit()
    return member


def create_api_key(
    session: Session, *, user: User, project_gid: str, name: str = "default",
) -> str:
    """A new API key of ``user`` for a project he may act on; returns the key itself, which
    is stored only as its digest (shown once).  Commits."""
    begin_writing(session)
    require_member(session, session_claims(user), project_gid)
    taken = session.execute(select(col(ApiKey.key_hash)).where(
        col(ApiKey.user_gid) == user.gid, col(ApiKey.project_gid) == project_gid,
        col(ApiKey.name) == name,
    )).first()
    if taken is not None:
        raise BadRequest(f"user {user.username!r} has a key named {name!r} for this project")
    key = new_api_key()
    session.add(ApiKey(key_hash=api_key_digest(key), user_gid=user.gid, project_gid=project_gid,
                       name=name, created_on=time.time()))
    session.commit()
    return key


# -- ending access (the CLI's `users disable|enable|remove-ops` and `apikeys revoke`) ---------


def disable_user(session: Session, *, username: str) -> User:
    """Disable a user and end every session of theirs (their token version is bumped): the
    next request with any of their tokens is a 401, and open websockets close before their
    next delivery (:mod:`bulkjobs.revocations`).  :class:`NotFound` for an unknown user.
    Commits, then announces the revocation."""
    user = _set_user(session, username, disabled=True,
                     token_version=col(User.token_version) + 1)
    revocations.announce(user.gid)
    return user


def enable_user(session: Session, *, username: str) -> User:
    """Let a disabled user log in again (tokens from before stay refused).  Commits."""
    return _set_user(session, username, disabled=False)


def remove_ops(session: Session, *, username: str) -> User:
    """Take the ``ops`` flag away: the user's next request, and their open websockets before
    their next delivery, act as a plain member of their projects.  Commits, then announces
    the revocation."""
    user = _set_user(session, username, ops=False)
    revocations.announce(user.gid)
    return user


def _set_user(session: Session, username: str, **values: Any) -> User:
    begin_writing(session)
    found = session.execute(update(User).where(col(User.username) == username).values(**values))
    if not found.rowcount:  # type: ignore[attr-defined]
        raise NotFound(f"no user {username!r}")
    session.commit()
    return session.execute(select(User).where(col(User.username) == username)
                           .execution_options(populate_existing=True)).scalar_one()


def revoke_api_key(session: Session, *, key_id: str) -> ApiKey:
    """Delete an API key by its public id: it opens nothing any more, the JWTs made from it
    are refused at their next request and their websockets close before their next
    delivery.  :class:`NotFound` for an unknown id.  Commits, then announces the
    revocation."""
    begin_writing(session)
    key = session.execute(select(ApiKey).where(col(ApiKey.key_id) == key_id)).scalar_one_or_none()
    if key is None:
        raise NotFound(f"no API key {key_id!r}")
    user_gid = key.user_gid  # read before the commit expires the deleted row
    session.delete(key)
    session.commit()
    revocations.announce(user_gid)
    return key
