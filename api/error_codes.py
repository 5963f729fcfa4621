"""The core's error codes and the HTTP status each one goes out with — one table for every
dialect.

An error of :mod:`bulkjobs.errors` carries an HTTP ``status`` and a ``code``.  For HTTP
errors the code is the status.  Unicat's application errors (codes 1000–1006,
:data:`APPLICATION_ERRORS`) go out as HTTP 422 in every dialect, whatever status the error
itself carries.  Each dialect's envelope takes the status from :func:`http_status` and names
the error in its own terms (Unicat keeps the code in ``result.code``, DatoCMS calls an
application error ``INVALID_FIELD``, Plone ``UnprocessableEntity``).
"""

from __future__ import annotations

from bulkjobs.errors import BulkJobsError

#: Unicat's application error codes and what each means.
APPLICATION_ERRORS: dict[int, str] = {
    1000: "Unexpected error",
    1001: "Validation error: field data invalid",
    1002: "Search error",
    1003: "Process error",
    1004: "Invite invalid",
    1005: "Excel worksheet invalid",
    1006: "Bulk selection error",
}

#: The HTTP status of each application error code.
HTTP_STATUS: dict[int, int] = {code: 422 for code in APPLICATION_ERRORS}


def is_application_error(code: int | None) -> bool:
    """Whether ``code`` is one of Unicat's application error codes (1000–1006)."""
    return code in APPLICATION_ERRORS


def http_status(exc: BulkJobsError) -> int:
    """The HTTP status ``exc`` goes out with in every dialect."""
    return HTTP_STATUS.get(exc.code, exc.status)
