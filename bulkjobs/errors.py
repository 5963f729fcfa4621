"""The error hierarchy shared by every layer.

Core code raises these; each HTTP dialect maps them to its own envelope in one place
(:mod:`api.errors`, through ``api/unicat/envelope.py`` and friends), and the websocket server
maps them to ``op: error``.
"""

from __future__ import annotations

from typing import Any


class BulkJobsError(Exception):
    """Root of every error the product raises on purpose."""

    status: int = 500
    code: int = 500
    message: str = "Internal server error"

    def __init__(self, message: str | None = None, *, info: dict[str, Any] | None = None) -> None:
        super().__init__(message or self.message)
        self.message = message or self.message
        self.info: dict[str, Any] = info or {}


def public_message(exc: BaseException) -> str:
    """What a client may read of an exception a job ended with: a product error's own
    message; for anything else its class name only.  The text of a database error carries
    the SQL statement and its bound parameters, others may carry paths or stack details:
    those stay in the worker's log."""
    if isinstance(exc, BulkJobsError):
        return exc.message
    return f"{type(exc).__name__}: the job failed on the worker (its log has the details)"


class BadRequest(BulkJobsError):
    status = code = 400
    message = "Bad request"


class Unauthorized(BulkJobsError):
    status = code = 401
    message = "Permission denied"


class Forbidden(BulkJobsError):
    status = code = 403
    message = "Forbidden"


class NotFound(BulkJobsError):
    status = code = 404
    message = "Not found"


class Conflict(BulkJobsError):
    """The request clashes with another one still being handled (HTTP 409)."""

    status = code = 409
    message = "Conflict"


class PayloadTooLarge(BulkJobsError):
    status = code = 413
    message = "Request body too large"


class Unprocessable(BulkJobsError):
    """The entity does not exist or the operation is not possible on it (HTTP 422)."""

    status = code = 422
    message = "Unprocessable entity"


class RateLimited(BulkJobsError):
    status = code = 429
    message = "Too many requests"


class ServiceUnavailable(BulkJobsError):
    status = code = 503
    message = "Service unavailable"


class ValidationError(BulkJobsError):
    """Application error 1001: field data invalid."""

    status = 422
    code = 1001
    message = "Validation error"


class SelectionError(BulkJobsError):
    """Application error 1006: a malformed selection, rejected before anything is queued.

    ``info`` always names the offending entry index (``entry``) and the ``reason``.
    """

    status = 422
    code = 1006
    message = "Selection error"

    def __init__(self, reason: str, *, entry: int | None = None, **extra: Any) -> None:
        info: dict[str, Any] = {"reason": reason, **extra}
        if entry is not None:
            info["entry"] = entry
        where = f"entry {entry}: " if entry is not None else ""
        super().__init__(f"Selection error: {where}{reason}", info=info)
        self.reason = reason
        self.entry = entry


_BY_STATUS: dict[int, type[BulkJobsError]] = {
    cls.status: cls for cls in (BadRequest, Unauthorized, Forbidden, NotFound, Conflict,
                                PayloadTooLarge, Unprocessable, RateLimited, ServiceUnavailable)
}


def error_for_status(status: int, message: str, info: dict[str, Any] | None = None
                     ) -> BulkJobsError:
    """The error of the hierarchy for an HTTP status (e.g. a failed job result's), carrying
    ``message`` and ``info``; an unknown status keeps its own number."""
    cls = _BY_STATUS.get(status)
    if cls is not None:
        return cls(message, info=info)
    exc = BulkJobsError(message, info=info)
    exc.status = exc.code = status
    return exc
