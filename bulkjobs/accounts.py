"""Logging in: API keys and passwords to users; membership checks.  Shared by every dialect
and by the stream server."""

from __future__ import annotations

from sqlalchemy import select
from sqlmodel import Session

from bulkjobs.errors import Forbidden, Unauthorized
from bulkjobs.tokens import Claims, api_key_digest, check_password
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
    if user is None or not check_password(password, user.password_hash):
        raise Unauthorized("Invalid username or password")
    return user


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


def require_user(session: Session, claims: Claims) -> User:
    user = session.get(User, claims.user)
    if user is None:
        raise Unauthorized("Unknown user")
    return user


