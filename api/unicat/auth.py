"""Unicat `auth`, `login` and `init`: a JWT (in the `Authorization` header) and init data."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from sqlmodel import Session

from api import ratelimit
from api.deps import ClaimsDep, MemberDep, SessionDep
from api.unicat.bodies import ApiKeyBody, InitBody, LoginBody
from api.unicat.envelope import ok
from api.unicat.init import init_payload
from api.unicat.responses import GlobalLoginOut, InitOut, UserOut, answers
from bulkjobs.tokens import renew
from models.accounts import (
    api_key_login,
    member_access,
    require_user,
    session_claims,
    user_for_password,
)
from models.auth import ApiKey, User

router = APIRouter(prefix="/api", tags=["unicat: auth"])

#: OpenAPI: no credentials needed (the answer carries the JWT).
PUBLIC: dict[str, Any] = {"security": []}


def _answer(session: Session, response: Response, user: User, project: str, *,
            key: ApiKey | None = None, omit_extended: bool = False) -> dict[str, Any]:
    """A new session's JWT and the init data; made from an API key, the JWT opens that key's
    project only."""
    proj, claims = member_access(session, session_claims(user, key=key), project)
    response.headers["Authorization"] = renew(claims)
    result, data = init_payload(session, user=user, project=proj, omit_extended=omit_extended)
    return ok(result, data)


@router.post("/p/{project}/auth", **answers(InitOut), openapi_extra=PUBLIC)
def auth(project: str, body: ApiKeyBody, session: SessionDep, request: Request,
         response: Response) -> Any:
    """Exchange an API key for a JWT and the project's init data."""
    with ratelimit.login_attempt(request):
        user, key = api_key_login(session, project_gid=project, api_key=body.api_key)
    return _answer(session, response, user, project, key=key,
                   omit_extended=body.omit_extended_definitions)


@router.post("/p/{project}/login", **answers(InitOut), openapi_extra=PUBLIC)
def login(project: str, body: LoginBody, session: SessionDep, request: Request,
          response: Response) -> Any:
    """Log in with username and password for a project."""
    with ratelimit.login_attempt(request, name=body.username):
        user = user_for_password(session, username=body.username, password=body.password)
    return _answer(session, response, user, project)


@router.post("/login", **answers(GlobalLoginOut), openapi_extra=PUBLIC)
def global_login(body: LoginBody, session: SessionDep, request: Request,
                 response: Response) -> Any:
    """Log in with username and password (no project): a JWT and the user's projects."""
    with ratelimit.login_attempt(request, name=body.username):
        user = user_for_password(session, username=body.username, password=body.password)
    response.headers["Authorization"] = renew(session_claims(user))
    from models.queries import visible_projects

    projects = sorted(visible_projects(session, user_gid=user.gid, ops=user.ops))
    return ok({"user": user.gid, "ops": user.ops, "projects": projects,
               "JWT": response.headers["Authorization"]}, {"cc.users": {user.gid: user.public()}})


@router.post("/p/{project}/init", **answers(InitOut))
def init(project: str, actor: MemberDep, session: SessionDep, body: InitBody | None = None) -> Any:
    """The project's init data for the JWT's user."""
    return ok(*init_payload(session, user=require_user(session, actor.claims),
                            project=actor.project,
                            omit_extended=body is not None and body.omit_extended_definitions))


@router.get("/p/{project}/init", include_in_schema=False)
def init_get(project: str, actor: MemberDep, session: SessionDep) -> Any:
    return ok(*init_payload(session, user=require_user(session, actor.claims),
                            project=actor.project))


@router.post("/init", **answers(UserOut))
def global_init(c: ClaimsDep, session: SessionDep) -> Any:
    """The user's own data."""
    user = require_user(session, c)
    return ok({"user": user.gid}, {"cc.users": {user.gid: user.public()}})
