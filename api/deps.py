"""Request dependencies shared by the dialects: bearer tokens, sessions, the acting user."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request, Response
from sqlmodel import Session

from bulkjobs.accounts import require_member
from bulkjobs.errors import Unauthorized
from bulkjobs.tokens import Claims, issue, verify
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


def claims(request: Request, response: Response) -> Claims:
    """The verified JWT claims; every successful response carries a renewed JWT."""
    c = verify(bearer(request))
    response.headers["Authorization"] = issue(c.user, ops=c.ops)
    return c


ClaimsDep = Annotated[Claims, Depends(claims)]


@dataclass(frozen=True, slots=True)
class Actor:
    claims: Claims
    project: Project

    @property
    def user(self) -> str:
        return self.claims.user

    def as_editor(self) -> dict[str, Any]:
        return {"type": "user", "id": self.claims.user}


def project_member(project: str, c: ClaimsDep, session: SessionDep) -> Actor:
    return Actor(claims=c, project=require_member(session, c, project))


MemberDep = Annotated[Actor, Depends(project_member)]
