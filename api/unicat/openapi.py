"""OpenAPI documentation of the Unicat envelope: the success and error bodies every Unicat
route answers with (passed as ``responses=`` when the routers are included)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel


class ErrorResult(BaseModel):
    code: int
    message: str
    info: dict[str, Any]


class ErrorBody(BaseModel):
    success: bool
    result: ErrorResult
    data: dict[str, Any]


ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": description}
    for status, description in (
        (400, "Bad request: missing parameters or wrong type or value"),
        (401, "Unauthorized: missing or expired JWT (WWW-Authenticate: Bearer)"),
        (403, "Forbidden: not a member of this project"),
        (404, "Not found"),
        (413, "Request body over 10 MB"),
        (422, "Unprocessable entity, or application error 1000-1006 (1006: selection error)"),
        (429, "Rate limit exceeded: wait X-RateLimit-Reset seconds"),
        (503, "Redis or the database is unavailable; try again shortly"),
    )
}
