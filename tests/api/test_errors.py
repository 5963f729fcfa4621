"""How a core error goes out in each dialect (unit, no services): the HTTP status — the
application codes 1000–1006 as 422 whatever the error's own status — and the body."""

from __future__ import annotations

import json
from typing import Any

import pytest

from api.dato import envelope as dato
from api.plone import envelope as plone
from api.unicat import envelope as unicat
from bulkjobs.errors import (
    BadRequest,
    BulkJobsError,
    Forbidden,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    SelectionError,
    ServiceUnavailable,
    Unauthorized,
    Unprocessable,
    ValidationError,
)


def coded(code: int, status: int = 500) -> BulkJobsError:
    """An error carrying an application ``code`` on a status of its own."""
    exc = BulkJobsError("coded")
    exc.code, exc.status = code, status
    return exc


# error, HTTP status, DatoCMS code, Plone type
CASES: list[tuple[BulkJobsError, int, str, str]] = [
    (BadRequest(), 400, "INVALID_PARAMS", "BadRequest"),
    (Unauthorized(), 401, "INVALID_AUTHORIZATION_HEADER", "Unauthorized"),
    (Forbidden(), 403, "INSUFFICIENT_PERMISSIONS", "Forbidden"),
    (NotFound(), 404, "NOT_FOUND", "NotFound"),
    (coded(405, 405), 405, "INVALID_ENDPOINT", "MethodNotAllowed"),
    (PayloadTooLarge(), 413, "INVALID_REQUEST", "RequestEntityTooLarge"),
    (Unprocessable(), 422, "INVALID_REQUEST", "UnprocessableEntity"),
    (RateLimited(), 429, "RATE_LIMIT_EXCEEDED", "TooManyRequests"),
    (ServiceUnavailable(), 503, "SERVICE_UNAVAILABLE", "ServiceUnavailable"),
    (BulkJobsError(), 500, "EXCEPTION", "InternalServerError"),
    (coded(418, 418), 418, "EXCEPTION", "InternalServerError"),
    (ValidationError(), 422, "INVALID_FIELD", "UnprocessableEntity"),
    (SelectionError("bad entry", entry=2), 422, "INVALID_FIELD", "UnprocessableEntity"),
    *[(coded(code), 422, "INVALID_FIELD", "UnprocessableEntity") for code in range(1000, 1007)],
    *[(coded(code, 400), 422, "INVALID_FIELD", "UnprocessableEntity")
      for code in (1000, 1006)],
    (coded(999, 400), 400, "INVALID_PARAMS", "BadRequest"),
    (coded(1007, 400), 400, "INVALID_PARAMS", "BadRequest"),
]


def body(response: Any) -> Any:
    return json.loads(bytes(response.body))


@pytest.mark.parametrize(("exc", "status", "dato_code", "plone_type"), CASES)
def test_unicat(exc: BulkJobsError, status: int, dato_code: str, plone_type: str) -> None:
    """Unicat: the status, the error's own code in ``result``, WWW-Authenticate on 401."""
    response = unicat.error_response(exc)
    assert response.status_code == status
    assert body(response) == {"success": False, "data": {}, "result": {
        "code": exc.code, "message": exc.message, "info": exc.info}}
    assert (response.headers.get("www-authenticate") == unicat.REALM) == (status == 401)


@pytest.mark.parametrize(("exc", "status", "dato_code", "plone_type"), CASES)
def test_dato(exc: BulkJobsError, status: int, dato_code: str, plone_type: str) -> None:
    """DatoCMS: the status and an ``api_error`` with the code for it, transient on 503."""
    response = dato.error_response(exc)
    assert response.status_code == status
    [error] = body(response)["data"]
    assert error["type"] == "api_error"
    expected: dict[str, Any] = {"code": dato_code,
                                "details": {**exc.info, "message": exc.message}}
    if status == 503:
        expected["transient"] = True
    assert error["attributes"] == expected


@pytest.mark.parametrize(("exc", "status", "dato_code", "plone_type"), CASES)
def test_plone(exc: BulkJobsError, status: int, dato_code: str, plone_type: str) -> None:
    """Plone: the status and ``{"type", "message"}`` named as Zope names the status."""
    response = plone.error_response(exc)
    assert response.status_code == status
    assert body(response) == {"type": plone_type, "message": exc.message}


@pytest.mark.parametrize(("status", "app_code", "code"), [
    (422, 1001, "INVALID_FIELD"), (422, 1006, "INVALID_FIELD"), (422, None, "INVALID_REQUEST"),
    (422, 999, "INVALID_REQUEST"), (404, 1001, "NOT_FOUND"), (500, None, "EXCEPTION"),
])
def test_dato_error_body(status: int, app_code: int | None, code: str) -> None:
    """A DatoCMS error body built from a status (a job result's): the application code only
    names INVALID_FIELD on a 422."""
    attributes = dato.error_body(status, "m", {"k": 1}, app_code=app_code)["data"][0]["attributes"]
    assert attributes["code"] == code and attributes["details"] == {"k": 1, "message": "m"}
