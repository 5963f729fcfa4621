"""Logging in: API keys and passwords to users; membership checks.  Shared by every dialect
and by the stream server."""

from __future__ import annotations

import secrets
import time
import uuid
from collections.abc import Sequence
from functools import lru_cache

from sqlalchemy import Connection, bindparam, select
from sqlmodel import Session, col

from bulkjobs.errors import BadRequest, Forbidden, NotFound, Unauthorized
from bulkjobs.tokens import Claims, api_key_digest, check_password, hash_password, new_api_key
from models.auth import ApiKey, Member, Project, User


def user_for_api_key(session: Session, *, project_gid: str, api_key: str) -> User:
    key = session.get(ApiKey, api_key_digest(api_key)) if isinstance(api_key, str) else None
    if key is None or key.project_gid != project_gid:
        raise Unauthorized("Invalid API key")
    user = session.get(User, key.user_gid)
    if user is None:
        raise Unauthorized("Invalid API key")
    return user


def user_for_password(session: Session, *, username: str, password: str) -> User:
    user = session.execute(select(User).where(User.username == username)).scalar_one_or_none()
    # An unknown username costs one scrypt too: answering faster would tell an attacker which
    # usernames exist.
    stored = user.password_hash if user is not None else _decoy_hash()
    if not check_password(password, stored) or user is None:
        raise Unauthorized("Invalid username or password")
    return user


@lru_cache(maxsize=1)
def _decoy_hash() -> str:
    """A scrypt hash of a random password, checked against when the username is unknown."""
    return hash_password(secrets.token_urlsafe(16))


def require_member(session: Session, claims: Claims, project_gid: str) -> Project:
    """The project, if the user may act on it: an active member, or an ops user.  One query
    (it runs on every request)."""
    row = session.execute(
        select(Project, Member.status)
        .outerjoin(Member, (Member.project_gid == Project.gid) & (Member.user_gid == claims.user))
        .where(Project.gid == project_gid)
    ).first()
    # Unknown projects answer like forbidden ones, so gids of others' projects leak nothing.
    if row is None or row[0].status != "active":
        raise Forbidden("Not a member of this project")
    if row[1] == "active" or claims.ops:
        return row[0]
    raise Forbidden("Not a member of this project")


def may_act(conn: Connection, asks: Sequence[tuple[Claims, str]]) -> list[bool]:
    """:func:`require_member`'s rule for many ``(claims, project gid)`` pairs at once, in two
    queries whatever their number: whether each user may act on each project."""
    projects = sorted({project for _, project in asks})
    active = set(conn.execute(_ACTIVE_PROJECTS, {"projects": projects}).scalars())
    members = {tuple(row) for row in conn.execute(_ACTIVE_MEMBERS, {
        "projects": sorted(active), "users": sorted({c.user for c, _ in asks})})}
    return [project in active and (c.ops or (project, c.user) in members)
            for c, project in asks]


# Built once: the statements of may_act compile once (expanding IN lists), not per batch.
_ACTIVE_PROJECTS = select(Project.gid).where(
    col(Project.gid).in_(bindparam("projects", expanding=True)), Project.status == "active")
_ACTIVE_MEMBERS = select(Member.project_gid, Member.user_gid).where(
    col(Member.project_gid).in_(bindparam("projects", expanding=True)),
    col(Member.user_gid).in_(bindparam("users", expanding=True)), Member.status == "active")


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
    taken = session.execute(select(col(User.gid)).where(col(User.username) == username)).first()
    if taken is not None:
        raise BadRequest(f"user {username!r} exists already")
    user = User(gid=str(uuid.uuid4()), username=username, name=name,
                password_hash=hash_password(password), ops=ops)
    session.add(user)
    session.commit()
    return user


def add_member(
    session: Session, *, user: User, project_gid: str, roles: list[str] | None = None,
) -> Member:
    """Make ``user`` an active member of a project (roles ``member`` by default); updates an
    existing membership.  :class:`NotFound` for an unknown project.  Commits."""
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
    require_member(session, Claims(user=user.gid, ops=user.ops, exp=0), project_gid)
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
