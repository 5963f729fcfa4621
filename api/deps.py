"""Request dependencies shared by the dialects: bearer tokens, sessions, the acting user."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request, Response
from sqlmodel import Session

from api import ratelimit
from bulkjobs.errors import Unauthorized
from bulkjobs.tokens import Claims, renew, verify
from models.accounts import (
    api_key_login,
    authorize,
    member_access,
    require_owner,
    session_claims,
)
from models.auth import Project
from models.engine import get_engine


def get_session() -> Iterator[Session]:
    with Session(get_engine(), expire_on_commit=False) as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]


def bearer(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    if header and not value and "." in header:  # a bare JWT, as Unicat itself hands them out
        return header.strip()
    raise Unauthorized("JWT missing")


def claims(request: Request, response: Response, session: SessionDep) -> Claims:
    """The verified JWT's claims as the database backs them now (:func:`authorize`: a user
    who was deleted or disabled, a session that was ended, a revoked API key are refused with
    401; ``ops`` is the user row's); every successful response carries a renewed JWT that
    says the same.  The request counts against the user's rate limit
    (:func:`api.ratelimit.check`)."""
    c = verify(bearer(request))
    ratelimit.check(request, c.user)
    c = authorize(session, c)
    response.headers["Authorization"] = renew(c)
    return c


ClaimsDep = Annotated[Claims, Depends(claims)]


@dataclass(frozen=True, slots=True)
class Actor:
    claims: Claims
    project: Project

    @property
    def user(self) -> str:
        return self.claims.user

    @property
    def language(self) -> str:
        """The project's default language (its first), which single-language dialects
        (DatoCMS, Plone) read and write; ``en`` for a project without languages."""
        return (self.project.languages or ["en"])[0]

    def as_editor(self) -> dict[str, Any]:
        return {"type": "user", "id": self.claims.user}


def project_member(project: str, request: Request, response: Response,
                   session: SessionDep) -> Actor:
    """:func:`claims` and the membership check in one query (:func:`_checked`)."""
    c = verify(bearer(request))
    ratelimit.check(request, c.user)
    actor = _checked(session, c, project)
    response.headers["Authorization"] = renew(actor.claims)
    return actor


def _checked(session: Session, c: Claims, project: str) -> Actor:
    """The acting member, if ``c``'s user may act on the project (:func:`member_access`);
    the session's connection is handed back.

    Routes that write (queueing a job, editing) take a write connection of their own from the
    pool.  Were the session still holding its connection from this check, each such request
    would hold two at once, and as many concurrent requests as the pool has connections would
    each hold one and wait for a second until the pool timeout: a deadlock under load, seen
    with a few dozen bulk requests at once.  (expire_on_commit is off: the project stays
    loaded; a route that reads again simply takes a connection again.)"""
    found, now = member_access(session, c, project)
    session.commit()
    return Actor(claims=now, project=found)


MemberDep = Annotated[Actor, Depends(project_member)]


def project_owner(actor: MemberDep, session: SessionDep) -> Actor:
    """:func:`project_member`, who must be an owner of the project (or ops): 403 otherwise
    (:func:`models.accounts.require_owner`); the session's connection is handed back."""
    require_owner(session, actor.claims, actor.project.gid)
    session.commit()
    return actor


OwnerDep = Annotated[Actor, Depends(project_owner)]


def looks_like_jwt(token: str) -> bool:
    return token.count(".") == 2


def credentials_member(project: str, request: Request, session: SessionDep) -> Actor:
    """The acting member for ``Authorization: Bearer <JWT or API key>``, as DatoCMS and Plone
    clients send their API tokens: a JWT is verified, anything else is taken as an API key of
    this project.  The request counts against the user's rate limit; no JWT is renewed."""
    token = bearer(request)
    if looks_like_jwt(token):
        c = verify(token)
    else:
        user, key = api_key_login(session, project_gid=project, api_key=token)
        c = session_claims(user, key=key)
    ratelimit.check(request, c.user)
    return _checked(session, c, project)


CredentialsMemberDep = Annotated[Actor, Depends(credentials_member)]
